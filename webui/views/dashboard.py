"""The dashboard: counters, hosts by state, recent boots, the build queue, service health."""

from __future__ import annotations

from flask import Blueprint, render_template

from appliance import overview

from ..context import conn, ctx

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index():
    c = conn()
    health = ctx().health()
    return render_template(
        "dashboard.html",
        counters=overview.counters(c),
        hosts=overview.active_hosts(c),
        boots=overview.recent_boots(c),
        queue=overview.build_queue(c),
        recent=overview.recent_events(c),
        health=health,
    )
