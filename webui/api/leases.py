"""DHCP leases."""

from __future__ import annotations

from flask import jsonify

from appliance.domain import leases
from appliance.errors import InvalidInput

from ..context import conn
from . import args
from .registry import route
from .schemas import LIMIT, OFFSET, page_of, q, ref


@route("/leases", "GET", "DHCPv4 and DHCPv6 leases (active; all with ?all=true; one family "
       "with ?family=4 or 6)", tag="leases",
       params=[q("all", {"type": "boolean"}), q("family", {"type": "integer", "enum": [4, 6]}),
               LIMIT, OFFSET], response=page_of(ref("Lease")))
def list_leases():
    include = args.bool_arg("all")
    family = args.int_arg("family", None, 4, 6)
    if family == 5:
        raise InvalidInput("family must be 4 or 6", field="family")
    limit = args.int_arg("limit", 100, 1, 1000)
    offset = args.int_arg("offset", 0, 0, 10_000_000)
    c = conn()
    return jsonify({"items": leases.list_leases(c, include_expired=include, limit=limit,
                                                offset=offset, family=family),
                    "total": leases.count_leases(c, include_expired=include, family=family),
                    "limit": limit, "offset": offset})
