"""The router's network interfaces (read-only)."""

from __future__ import annotations

from flask import jsonify

from appliance.router import linkinfo

from .registry import route
from .schemas import arr, ref


@route("/network/interfaces", "GET", "Network interfaces and their state", tag="network",
       response=arr(ref("Interface")))
def list_interfaces():
    return jsonify(linkinfo.list_interfaces())
