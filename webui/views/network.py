"""Network: the router's interfaces and their state (read-only)."""

from __future__ import annotations

from flask import Blueprint, render_template

from appliance.router import linkinfo

from ..context import config

bp = Blueprint("network", __name__, url_prefix="/network")


@bp.get("/")
def index():
    cfg = config()
    roles = {cfg.lan.interface: "LAN"}
    if cfg.wan.interface:
        roles[cfg.wan.interface] = "WAN"
    return render_template("network.html", interfaces=linkinfo.list_interfaces(), roles=roles, cfg=cfg)
