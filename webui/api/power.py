"""A host's BMC and power: the BMC record (its password is write-only), power actions,
and Boot now (the BMC's one-time network boot, else Wake-on-LAN)."""

from __future__ import annotations

from flask import Response, jsonify

from appliance.domain import bmc
from appliance.errors import InvalidInput, NotFound
from appliance.router.bmc import flows, power

from ..context import config, conn
from . import args
from .registry import route
from .schemas import NAME, ref


@route("/hosts/<name>/bmc", "GET", "A host's BMC (never its password)", tag="power",
       params=[NAME], response=ref("Bmc"), errors=(404,))
def get_bmc(name: str):
    b = bmc.get_bmc(conn(), name)
    if b is None:
        raise NotFound(f"host {name} has no BMC configured")
    return jsonify(b.public())


@route("/hosts/<name>/bmc", "PUT", "Set a host's BMC (the password is required the first "
       "time; without it the stored one is kept)", tag="power", params=[NAME],
       body=ref("BmcInput"), response=ref("Bmc"), errors=(400, 404))
def set_bmc(name: str):
    b = bmc.set_bmc(conn(), name, bmc.parse_input(args.body()))
    return jsonify(b.public())


@route("/hosts/<name>/bmc", "DELETE", "Forget a host's BMC and its password", tag="power",
       params=[NAME], status=204, errors=(404,))
def clear_bmc(name: str):
    if not bmc.clear_bmc(conn(), name):
        raise NotFound(f"host {name} has no BMC configured")
    return Response(status=204)


@route("/hosts/<name>/power", "POST", "Power action through the host's BMC: status, on, off, "
       "cycle, pxe (next boot from the network, once); 502 when the BMC fails", tag="power",
       params=[NAME], body={"type": "object", "required": ["action"], "properties": {
           "action": {"enum": list(power.ACTIONS)}}},
       response=ref("PowerResult"), errors=(400, 404, 502))
def power_action(name: str):
    action = args.want(args.body(), "action", str, True)
    if action not in power.ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(power.ACTIONS)}", field="action")
    return jsonify(power.power_action(conn(), name, action).to_dict())


@route("/hosts/<name>/boot", "POST", "Boot now: next boot from the network through the BMC, "
       "then power on or cycle; Wake-on-LAN without a BMC or when it fails", tag="power",
       params=[NAME], response=ref("BootOutcome"), errors=(404, 502))
def boot_now(name: str):
    out = power.boot_from_network(conn(), name, interface=config().lan.interface)
    return jsonify(out.to_dict())


@route("/hosts/<name>/reinstall", "POST", "Reinstall: set the host's mode to install and boot "
       "it from the network now (BMC one-time PXE, else Wake-on-LAN)", tag="power",
       params=[NAME], response=ref("BootOutcome"), errors=(404, 502))
def reinstall(name: str):
    out = flows.reinstall(conn(), name, interface=config().lan.interface)
    return jsonify(out.to_dict())
