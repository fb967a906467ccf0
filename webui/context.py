"""Per-request access to what `WebContext` carries."""

from __future__ import annotations

import sqlite3

from flask import current_app, g


def ctx():
    return current_app.extensions["nixie"]


def conn() -> sqlite3.Connection:
    """This request thread's connection to the state DB."""
    return ctx().store.conn()


def config():
    """The config file with the settings stored by the UI applied."""
    from appliance.domain import settings

    if "nixie_cfg" not in g:
        g.nixie_cfg = settings.effective_config(ctx().config, conn())
    return g.nixie_cfg
