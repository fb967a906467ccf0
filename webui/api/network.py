"""The router's network: interfaces, the saved settings, and changes that roll back by
themselves unless confirmed (appliance.router.network's transactions)."""

from __future__ import annotations

from flask import jsonify

from appliance.errors import InvalidInput
from appliance.router import linkinfo, network

from ..context import config, conn
from . import args
from .registry import route
from .schemas import SCHEMAS, STR, arr, p, ref

TXN_ID = p("txn_id", {"type": "string", "pattern": "^[0-9a-f]{1,32}$"})


@route("/network/interfaces", "GET", "Network interfaces and their state", tag="network",
       response=arr(ref("Interface")))
def list_interfaces():
    return jsonify(linkinfo.list_interfaces())


@route("/network", "GET", "The saved network settings, the managed links and routes as the "
       "kernel has them, and the change waiting for confirmation", tag="network",
       response=ref("NetworkStatus"))
def network_status():
    return jsonify(network.current_status(conn(), config()))


@route("/network", "PUT", "Apply network settings (a moment after this answer); they roll "
       "back by themselves unless confirmed within confirm_seconds", tag="network",
       body=ref("NetworkSettingsInput"), response=ref("NetworkChange"), status=202,
       errors=(400, 409))
def apply_network():
    d = dict(args.body())
    seconds = d.pop("confirm_seconds", None)
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)):
        raise InvalidInput("confirm_seconds must be a number", field="confirm_seconds")
    txn = network.apply_settings(conn(), config(), d, seconds,
                                 apply_delay=network.WEB_APPLY_DELAY)
    return jsonify(txn), 202


@route("/network/changes/<txn_id>", "GET", "One network change and its state", tag="network",
       params=[TXN_ID], response=ref("NetworkChange"), errors=(404,))
def get_network_change(txn_id: str):
    return jsonify(network.get_transaction(conn(), txn_id))


@route("/network/changes/<txn_id>/confirm", "POST", "Keep a pending network change (it becomes "
       "the saved settings)", tag="network", params=[TXN_ID], response=ref("NetworkChange"),
       errors=(404, 409))
def confirm_network_change(txn_id: str):
    return jsonify(network.confirm(conn(), txn_id))


@route("/network/changes/<txn_id>/rollback", "POST", "Undo a pending network change now",
       tag="network", params=[TXN_ID], response=ref("NetworkChange"), errors=(404, 409))
def rollback_network_change(txn_id: str):
    return jsonify(network.revert(conn(), config(), txn_id))


ROUTE_SCHEMA = {"type": "object", "required": ["dst"], "properties": {
    "dst": {"type": "string", "description": "default or a CIDR"},
    "via": {"type": ["string", "null"]}, "dev": {"type": ["string", "null"]}}}
SETTINGS_PROPERTIES = {
    "lan_interface": STR, "lan_address": {"type": "string", "description": "address/prefix"},
    "lan_ports": arr(STR), "wan_interface": {"type": ["string", "null"]},
    "wan_mode": {"enum": ["none", "static", "dhcp"]}, "wan_address": {"type": ["string", "null"]},
    "wan_gateway": {"type": ["string", "null"]}, "routes": arr(ROUTE_SCHEMA)}
SCHEMAS.update({  # this resource's records, in the one OpenAPI document
    "NetworkSettings": {"type": "object", "properties": SETTINGS_PROPERTIES},
    "NetworkSettingsInput": {
        "type": "object", "required": ["lan_interface", "lan_address"],
        "properties": {**SETTINGS_PROPERTIES, "confirm_seconds": {
            "type": "number", "minimum": 5, "maximum": 3600,
            "description": "default: network.confirm_seconds"}}},
    "NetworkChange": {"type": "object", "properties": {
        "id": STR, "state": {"enum": ["pending", "rolling_back", "confirmed", "rolled_back",
                                      "failed"]},
        "created_at": {"type": "number"}, "deadline": {"type": "number"},
        "seconds_left": {"type": "number"}, "desired": ref("NetworkSettings"),
        "ops": arr(STR), "finished_at": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"]}}},
    "NetworkStatus": {"type": "object", "properties": {
        "settings": ref("NetworkSettings"), "pending": {"oneOf": [ref("NetworkChange"),
                                                                  {"type": "null"}]},
        "links": {"type": "object", "additionalProperties": {"type": "object"}},
        "routes": arr(ROUTE_SCHEMA), "dhcp": arr(STR)}},
})
