"""The dashboard: counters, hosts by state, recent boots, the build queue, service health,
machines waiting to be adopted, and the binary cache's key with a nix.settings snippet.

Its body is a shared fragment (webui/fragments.py): at most a second old."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from appliance.domain import bmc, machines, overview
from appliance.nix.cache_info import cache_info

from .. import fragments
from ..context import config, conn, ctx

bp = Blueprint("dashboard", __name__)


def _body() -> str:
    c = conn()
    return render_template("_dashboard_body.html", health=ctx().health(),
                           counters=overview.counters(c), hosts=overview.active_hosts(c),
                           boots=overview.recent_boots(c), queue=overview.build_queue(c),
                           recent=overview.recent_events(c), power=bmc.power_by_host(c),
                           waiting=machines.list_waiting(c, limit=5),
                           waiting_total=machines.count_waiting(c), cache=cache_info(config()))


@bp.get("/")
def index():
    return render_template("dashboard.html", body=fragments.cached(request.full_path, _body))
