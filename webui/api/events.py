"""The event log, filtered and paged."""

from __future__ import annotations

from flask import jsonify

from appliance.domain import events, hosts

from ..context import conn
from . import args
from .registry import route
from .schemas import LIMIT, STR, arr, q, ref


@route("/events", "GET", "Events, newest first; page with before=<last id>", tag="events",
       params=[q("kind", STR, "exact kind or prefix*"), q("host", STR),
               q("level", {"enum": list(events.LEVELS)}, "this level and above"),
               q("before", {"type": "integer", "minimum": 1}), LIMIT],
       response=arr(ref("Event")), errors=(400, 404))
def list_events():
    host = args.str_arg("host", 63)
    host_id = hosts.get_host(conn(), host)["id"] if host else None
    level = args.str_arg("level", 16)
    return jsonify(events.search(conn(), kind=args.str_arg("kind", 64), host_id=host_id,
                                 level=level, before_id=args.int_arg("before", 0, 0, 2**62) or None,
                                 limit=args.int_arg("limit", 50, 1, 500)))
