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
from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import IntegerConverter

from appliance.errors import ConfigError
from appliance.state.secretfile import SESSION_KEY_BYTES

from . import api, filters, metrics, security
from .views import ALL_BLUEPRINTS
from .views.backup import raise_body_limit

SQLITE_MAX_INTEGER = 2**63 - 1
SESSION_LIFETIME = timedelta(hours=12)  # from login, whatever the session does after


class RowIdConverter(IntegerConverter):
    """`<int:...>` in this app's routes is a database row id: a number above
    SQLite's largest INTEGER names no row (404) instead of overflowing the query."""

    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", SQLITE_MAX_INTEGER)
        super().__init__(url_map, *args, **kwargs)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a body nested too deep for the parser is a ValueError
    (a 400 "not a JSON object" for the API) instead of a RecursionError (a 500)."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deep") from None


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
    """The web UI over `ctx`. Raises ConfigError when the session signing key is
    shorter than 32 bytes: there is no fallback key, so no one can forge a session."""
    if not isinstance(ctx.secret_key, bytes) or len(ctx.secret_key) < SESSION_KEY_BYTES:
        raise ConfigError("web.secret_key_file",
                          f"the session signing key is missing or shorter than {SESSION_KEY_BYTES} "
                          "bytes; refusing to start the web UI with it")
    app = Flask(__name__)
    app.json = JSONProvider(app)
    app.config.update(
        SECRET_KEY=ctx.secret_key,
        SESSION_COOKIE_NAME="nixie_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,  # the guard also ends it at login + this
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
        """ok / not ok for anyone (a load balancer, a monitor); the services, their
        errors and stats only for a logged-in admin or an API token."""
        h = ctx.health()
        ok = bool(h.get("ok"))
        body = h if security.authenticated_quietly() else {"ok": ok}
        return jsonify(body), (200 if ok else 503)

    metrics.init_app(app)  # first: its clock starts before the guard may answer
    app.before_request(raise_body_limit)  # before the guard reads the form
    security.init_app(app)
    filters.init_app(app)
    app.register_blueprint(metrics.bp)
    for bp in ALL_BLUEPRINTS:
        app.register_blueprint(bp)
    app.register_blueprint(api.bp)
    return app
