"""The dashboard: counters, hosts by state, recent boots, the build queue, service health,
machines waiting to be adopted, and the binary cache's key with a nix.settings snippet.

Its body is a shared fragment (webui/fragments.py): at most a second old."""

from __future__ import annotations

import ipaddress

from flask import Blueprint, render_template, request
from markupsafe import Markup

from appliance.domain import bmc, boots, machines, overview
from appliance.nix.cache_info import cache_info
from appliance.state.db import now

from .. import charts, fragments
from ..charts import Bar
from ..context import config, conn, ctx

bp = Blueprint("dashboard", __name__)
CHART_BARS = 24  # the last this many boots and builds


def _charts(c, counters: dict) -> list[Markup]:
    """Boots per hour, how long the last boots took, the DHCP pool's use, build times."""
    t = now()
    day = boots.since(c, t - 86400, t)
    per_hour = charts.hourly([b.started for b in day], t)
    out = [charts.bar_chart(
        "chart-boots-per-hour", "Boots per hour (last 24 h)",
        [Bar(n, charts.hour_label(h), f"{charts.hour_label(h)}:00 — {n} boot(s)")
         for h, n in per_hour], empty="No boots in the last 24 hours.")]
    ended = [b for b in day if b.outcome != "running"][-CHART_BARS:]
    out.append(charts.bar_chart(
        "chart-boot-durations", "Power-on to booted, last boots",
        [Bar(b.seconds if b.seconds is not None else b.last.ts - b.started,
             (b.host or "?")[:8],
             f"{b.host} ({b.firmware or '?'}): {b.outcome} after "
             f"{charts.duration(b.last.ts - b.started)}",
             "bar-ok" if b.outcome in ("booted", "installed") else "bar-bad") for b in ended],
        unit="s", empty="No finished boots in the last 24 hours."))
    cfg = config()
    if cfg.dhcp.mode == "authoritative":
        first, last = (ipaddress.IPv4Address(a) for a in cfg.dhcp.range)
        out.append(charts.meter("chart-lease-pool", "DHCP pool in use",
                                counters["leases_active"], int(last) - int(first) + 1))
    out.append(charts.bar_chart(
        "chart-build-durations", "Build times, last builds",
        [Bar(max(0.0, b["seconds"]), f"#{b['id']}",
             f"#{b['id']} {b['host_name']}: {b['status']} in {charts.duration(b['seconds'])}",
             "bar-ok" if b["status"] == "succeeded" else "bar-bad")
         for b in overview.build_durations(c, limit=CHART_BARS)],
        unit="s", empty="No finished builds yet."))
    return out


def _body() -> str:
    c = conn()
    counters = overview.counters(c)  # five counts: once for the cards and the pool meter
    return render_template("_dashboard_body.html", health=ctx().health(),
                           charts=_charts(c, counters), counters=counters,
                           hosts=overview.active_hosts(c),
                           boots=overview.recent_boots(c), queue=overview.build_queue(c),
                           recent=overview.recent_events(c), power=bmc.power_by_host(c),
                           waiting=machines.list_waiting(c, limit=5),
                           waiting_total=machines.count_waiting(c), cache=cache_info(config()))


@bp.get("/")
def index():
    return render_template("dashboard.html", body=fragments.cached(request.full_path, _body))
