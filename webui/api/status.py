"""GET /status: counters, service health, recent boots and the build queue."""

from __future__ import annotations

from flask import jsonify

from appliance.domain import overview

from ..context import conn, ctx
from .registry import route
from .schemas import ref


@route("/status", "GET", "Counters, service health, recent boots and the build queue", tag="status",
       response=ref("Status"))
def status():
    c = conn()
    return jsonify({"counters": overview.counters(c), "health": ctx().health(),
                    "recent_boots": overview.recent_boots(c), "build_queue": overview.build_queue(c)})
