"""DHCP leases."""

from __future__ import annotations

from flask import jsonify

from appliance.domain import leases
from appliance.errors import InvalidInput

from ..context import conn
from . import args
from .registry import route
from .schemas import CURSOR, LIMIT, OFFSET, page_of, q, ref


@route("/leases", "GET", "DHCPv4 and DHCPv6 leases (active; all with ?all=true; one family "
       "with ?family=4 or 6)", tag="leases",
       params=[q("all", {"type": "boolean"}), q("family", {"type": "integer", "enum": [4, 6]}),
               LIMIT, CURSOR, OFFSET],
       response=page_of(ref("Lease"), total=True), errors=(400,))
def list_leases():
    include = args.bool_arg("all")
    family = args.int_arg("family", None, 4, 6)
    if family == 5:
        raise InvalidInput("family must be 4 or 6", field="family")
    c = conn()
    return jsonify(args.offset_page(
        lambda **at: leases.list_leases(c, include_expired=include, family=family, **at),
        lambda: leases.count_leases(c, include_expired=include, family=family), 100))
