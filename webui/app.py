"""Flask application factory. Everything the app needs comes in through `WebContext`.

Blueprints, one per area, live in `webui/views/`; forms in `webui/forms.py`;
the REST API (with its OpenAPI document) in the `webui/api/` package; authentication,
the first-run gate, CSRF and security headers in `webui/security.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, jsonify
from werkzeug.routing import IntegerConverter

from . import api, filters, security
from .views import ALL_BLUEPRINTS

SQLITE_MAX_INTEGER = 2**63 - 1


class RowIdConverter(IntegerConverter):
    """`<int:...>` in this app's routes is a database row id: a number above
    SQLite's largest INTEGER names no row (404) instead of overflowing the query."""

    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", SQLITE_MAX_INTEGER)
        super().__init__(url_map, *args, **kwargs)


@dataclass
class WebContext:
    """What `nixie serve` hands the web UI: the state store, the config and a
    health callable. The UI calls appliance services with these; it never
    reaches into netservices."""

    store: Any
    config: Any
    health: Callable[[], dict[str, Any]]
    secret_key: bytes = b""


def create_app(ctx: WebContext) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=ctx.secret_key or b"dev-only",
        SESSION_COOKIE_NAME="nixie_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),  # from login; not slid per request
        SESSION_REFRESH_EACH_REQUEST=False,
        MAX_CONTENT_LENGTH=8 * 1024 * 1024,
        WTF_CSRF_CHECK_DEFAULT=False,  # security.guard() decides, so API tokens skip it
        WTF_CSRF_TIME_LIMIT=None,      # the token lives as long as the session
        JSON_SORT_KEYS=False,
    )
    app.extensions["nixie"] = ctx
    app.url_map.converters["int"] = RowIdConverter  # before any route is added

    @app.get("/healthz")
    def healthz():
        h = ctx.health()
        return jsonify(h), (200 if h.get("ok") else 503)

    security.init_app(app)
    filters.init_app(app)
    for bp in ALL_BLUEPRINTS:
        app.register_blueprint(bp)
    app.register_blueprint(api.bp)
    return app
