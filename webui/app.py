"""Flask application factory. Everything the app needs comes in through `WebContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, jsonify


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
    app.config["SECRET_KEY"] = ctx.secret_key or b"dev-only"
    app.extensions["nixie"] = ctx

    @app.get("/healthz")
    def healthz():
        h = ctx.health()
        return jsonify(h), (200 if h.get("ok") else 503)

    return app
