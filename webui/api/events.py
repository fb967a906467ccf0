"""The event log, filtered and paged."""

from __future__ import annotations

from flask import jsonify

from appliance.domain import events, hosts

from ..context import conn
from . import args
from .registry import route
from .schemas import CURSOR, STR, limit_param, page_of, q, ref


@route("/events", "GET", "Events, newest first, paged", tag="events",
       params=[q("kind", STR, "exact kind or prefix*"), q("host", STR),
               q("level", {"enum": list(events.LEVELS)}, "this level and above"),
               limit_param(events.PAGE_MAX), CURSOR,
               q("before", {"type": "integer", "minimum": 1}, "deprecated: use cursor")],
       response=page_of(ref("Event")), errors=(400, 404))
def list_events():
    host = args.str_arg("host", 63)
    host_id = hosts.get_host(conn(), host)["id"] if host else None
    level = args.str_arg("level", 16)
    return jsonify(args.id_page(
        lambda **at: events.search(conn(), kind=args.str_arg("kind", 64), host_id=host_id,
                                   level=level, **at), 50, events.PAGE_MAX, legacy="before"))
