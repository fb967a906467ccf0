"""Per-request access to what `WebContext` carries."""

from __future__ import annotations

import sqlite3

from flask import current_app, g

from appliance.config.schema import Config
from appliance.domain import settings


def ctx():
    return current_app.extensions["nixie"]


def conn() -> sqlite3.Connection:
    """This request thread's connection to the state DB."""
    return ctx().store.conn()


def config() -> Config:
    """The effective config: the config file with the stored settings applied."""
    if "nixie_cfg" not in g:
        g.nixie_cfg = settings.effective_config(ctx().config, conn())
    return g.nixie_cfg
