"""The editable settings: their effective values, the keys the deployment locks,
and changes, with what the running `nixie serve` did with them."""

from __future__ import annotations

from flask import g, jsonify

from appliance.domain import settings
from appliance.state.db import now

from .. import apply_report
from ..context import conn, ctx
from . import args
from .registry import route
from .schemas import ref


@route("/settings", "GET", "The editable settings, their effective values, the keys the "
       "deployment locks and the last change nixie serve applied", tag="settings",
       response=ref("SettingsState"))
def get_settings():
    cfg = ctx().config
    return jsonify({"values": settings.effective_values(cfg, conn()),
                    "locked": settings.locked(cfg), "apply": settings.apply_status(conn())})


@route("/settings", "PATCH", "Change settings (all or nothing; a locked key is refused); "
       "waits up to 2.5 s for the running nixie serve to apply them", tag="settings",
       body=ref("Settings"), response=ref("SettingsState"), errors=(400,))
def update_settings():
    cfg = ctx().config
    since = now()
    values = settings.update(cfg, conn(), args.body(), who=g.user["username"])
    report = apply_report.after_save(conn(), since)
    return jsonify({"values": values, "locked": settings.locked(cfg), "apply": report.status,
                    "message": report.message})
