"""DHCP leases."""

from __future__ import annotations

from flask import jsonify

from appliance.domain import leases

from ..context import conn
from . import args
from .registry import route
from .schemas import LIMIT, OFFSET, page_of, q, ref


@route("/leases", "GET", "DHCP leases (active; all with ?all=true)", tag="leases",
       params=[q("all", {"type": "boolean"}), LIMIT, OFFSET], response=page_of(ref("Lease")))
def list_leases():
    include = args.bool_arg("all")
    limit = args.int_arg("limit", 100, 1, 1000)
    offset = args.int_arg("offset", 0, 0, 10_000_000)
    c = conn()
    return jsonify({"items": leases.list_leases(c, include_expired=include, limit=limit,
                                                offset=offset),
                    "total": leases.count_leases(c, include_expired=include),
                    "limit": limit, "offset": offset})
