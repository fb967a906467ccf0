"""Machines waiting: MACs that PXE-booted without a host record; adopt one as a host."""

from __future__ import annotations

from flask import Response, jsonify

from appliance.domain import machines

from ..context import conn
from . import args
from .registry import route
from .schemas import STR, arr, p, ref

MAC = p("mac", {"type": "string", "description": "aa:bb:cc:dd:ee:ff (or with dashes)"})


@route("/machines", "GET", "Machines waiting: MACs that PXE-booted without a host record, most "
       "recently seen first", tag="machines", response=arr(ref("Machine")))
def list_machines():
    return jsonify(machines.list_waiting(conn()))


@route("/machines/<mac>/adopt", "POST", "Add a waiting machine as a host of a configuration "
       "(its build is queued; its next boot retry boots it)", tag="machines", params=[MAC],
       body={"type": "object", "required": ["configuration"], "properties": {
           "configuration": STR, "name": STR,
           "flake": {"type": "string", "description": "URL or id; needed when several flakes "
                                                      "list the configuration"}}},
       response=ref("Adopted"), status=201, errors=(400, 404, 409))
def adopt_machine(mac: str):
    d = args.body()
    out = machines.adopt(conn(), mac, args.want(d, "configuration", str, True),
                         flake=args.want(d, "flake", str), name=args.want(d, "name", str))
    return jsonify(out), 201


@route("/machines/<mac>", "DELETE", "Forget a waiting machine (it is listed again when it "
       "boots again)", tag="machines", params=[MAC], status=204, errors=(404,))
def forget_machine(mac: str):
    machines.forget(conn(), mac)
    return Response(status=204)
