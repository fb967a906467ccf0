"""The dashboard: counters, hosts by state, recent boots, the build queue, service health.

Its figures are computed at most once a second for all viewers (a wall screen
or many admins polling it cost one set of queries), so they may be up to 1 s old.
"""

from __future__ import annotations

import threading
import time

from flask import Blueprint, current_app, render_template

from appliance import overview

from ..context import conn, ctx

bp = Blueprint("dashboard", __name__)
FRESH_SECONDS = 1.0
_lock = threading.Lock()


def _cache() -> dict:
    return current_app.extensions.setdefault("nixie_dashboard", {"at": 0.0, "data": None})


def figures() -> dict:
    cache = _cache()
    with _lock:
        if cache["data"] is not None and time.monotonic() - cache["at"] < FRESH_SECONDS:
            return cache["data"]
    c = conn()
    data = {
        "counters": overview.counters(c),
        "hosts": overview.active_hosts(c),
        "boots": overview.recent_boots(c),
        "queue": overview.build_queue(c),
        "recent": overview.recent_events(c),
    }
    with _lock:
        cache.update(at=time.monotonic(), data=data)
    return data


def forget() -> None:
    """Drop the cached figures (after this app changed something)."""
    with _lock:
        _cache()["data"] = None


@bp.get("/")
def index():
    return render_template("dashboard.html", health=ctx().health(), **figures())
