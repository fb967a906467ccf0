"""DHCP leases."""

from __future__ import annotations

from flask import jsonify

from appliance.domain import leases

from ..context import conn
from . import args
from .registry import route
from .schemas import CURSOR, LIMIT, OFFSET, page_of, q, ref


@route("/leases", "GET", "DHCP leases (active; all with ?all=true)", tag="leases",
       params=[q("all", {"type": "boolean"}), LIMIT, CURSOR, OFFSET],
       response=page_of(ref("Lease"), total=True), errors=(400,))
def list_leases():
    include = args.bool_arg("all")
    limit = args.int_arg("limit", 100, 1, 1000)
    offset = args.decode_cursor("o", "offset") or 0
    c = conn()
    return jsonify(args.page(leases.list_leases(c, include_expired=include, limit=limit + 1,
                                                offset=offset), limit, "o", offset,
                             total=leases.count_leases(c, include_expired=include),
                             offset=offset))
