"""Hosts: list, add, change, remove, their events and generations, Wake-on-LAN,
hosts.json import and export."""

from __future__ import annotations

from flask import Response, jsonify, request

from appliance.domain import events, generations, hosts
from appliance.domain.ipv6 import lan_prefix6
from appliance.errors import InvalidInput
from appliance.nix import install
from appliance.router import wol

from ..context import config, conn, ctx
from . import args
from .registry import route
from .schemas import CURSOR, LIMIT, NAME, OFFSET, STR, arr, page_of, q, ref


@route("/hosts", "GET", "List hosts (search by name, MAC or IP; paginated)", tag="hosts",
       params=[q("search", STR), LIMIT, CURSOR, OFFSET], response=page_of(ref("Host"), total=True),
       errors=(400,))
def list_hosts():
    search = args.str_arg("search", 100)
    c = conn()
    return jsonify(args.offset_page(lambda **at: hosts.list_hosts(c, search=search, **at),
                                    lambda: hosts.count_hosts(c, search=search), 100))


@route("/hosts", "POST", "Add a host", tag="hosts", body=ref("HostInput"), response=ref("Host"),
       status=201, errors=(400, 409))
def add_host():
    d = args.body()
    macs = d.get("macs") if "macs" in d else d.get("mac")
    if isinstance(macs, str):
        macs = [macs]
    if not isinstance(macs, list) or not all(isinstance(m, str) for m in macs):
        raise InvalidInput("macs must be a list of MAC address strings", field="macs")
    reserve = _reservations(d, null_clears=False)
    h = hosts.add_host(conn(), args.want(d, "name", str, True), macs,
                       args.want(d, "flake", str, True), args.want(d, "attr", str, nullable=True),
                       args.want(d, "mode", str) or "netboot", **reserve)
    return jsonify(h), 201


@route("/hosts/<name>", "GET", "One host", tag="hosts", params=[NAME], response=ref("Host"),
       errors=(404,))
def get_host(name: str):
    return jsonify(hosts.get_host(conn(), name))


@route("/hosts/<name>", "PATCH", "Change a host's MACs, flake, attribute, mode or IP reservation", tag="hosts",
       params=[NAME], body=ref("HostPatch"), response=ref("Host"), errors=(400, 404, 409))
def update_host(name: str):
    d = args.body()
    unknown = set(d) - {"macs", "flake", "attr", "mode", "ip_reservation", "ip6_reservation"}
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    reserve = _reservations(d, null_clears=True)
    return jsonify(hosts.update_host(conn(), name, macs=args.want(d, "macs", list),
                                     flake=args.want(d, "flake", str),
                                     attr=args.want(d, "attr", str),
                                     mode=args.want(d, "mode", str), **reserve))


def _reservations(d: dict, *, null_clears: bool) -> dict:
    """hosts.add_host/update_host's ip, ip6 from the body's ip_reservation and
    ip6_reservation, each with the LAN network it must be in (network, network6)."""
    ip = _reservation(d, "ip_reservation", null_clears)
    ip6 = _reservation(d, "ip6_reservation", null_clears)
    return {"ip": ip, "network": config().lan.address if ip else None, "ip6": ip6,
            "network6": lan_prefix6(conn(), config().lan.address6) if ip6 else None}


def _reservation(d: dict, key: str, null_clears: bool) -> str | None:
    """d[key]; with `null_clears`, null is "" (the reservation cleared)."""
    v = args.want(d, key, str, nullable=True)
    return "" if null_clears and key in d and v is None else v


@route("/hosts/<name>", "DELETE", "Remove a host", tag="hosts", params=[NAME], status=204,
       errors=(404,))
def remove_host(name: str):
    hosts.remove_host(conn(), name)
    return Response(status=204)


@route("/hosts/<name>/events", "GET", "A host's boot timeline (newest first)", tag="hosts",
       params=[NAME, LIMIT, CURSOR], response=page_of(ref("Event")), errors=(400, 404))
def host_events(name: str):
    h = hosts.get_host(conn(), name)
    return jsonify(args.id_page(lambda **at: events.recent(conn(), host_id=h["id"], **at), 50))


@route("/hosts/<name>/generations", "GET", "A host's generations (newest first)", tag="hosts",
       params=[NAME], response=arr(ref("Generation")), errors=(404,))
def host_generations(name: str):
    return jsonify(generations.list_generations(conn(), name))


@route("/hosts/<name>/generation", "PUT", "Choose the generation the host boots (rollback)",
       tag="hosts", params=[NAME], body={"type": "object", "required": ["number"],
                                          "properties": {"number": {"type": "integer", "minimum": 1}}},
       response=ref("Host"), errors=(400, 404))
def set_host_generation(name: str):
    number = args.want(args.body(), "number", int, True)
    return jsonify(generations.set_current_generation(conn(), name, number))


@route("/hosts/<name>/wol", "POST", "Send Wake-on-LAN to every MAC of the host", tag="hosts",
       params=[NAME], response={"type": "object", "properties": {"host": STR, "macs": arr(STR)}},
       errors=(404, 502))
def wake_host(name: str):
    return jsonify({"host": name, "macs": wol.wake_host(conn(), name,
                                                       interface=config().lan.interface)})


@route("/hosts/<name>/install", "POST", "Push install: nixos-anywhere from the router installs "
       "the host's current generation to its disk over SSH, trusting only the host key its "
       "agent reported (202: started, the host's events tell how it went; dry_run: only the "
       "command)", tag="hosts", params=[NAME],
       body={"type": "object", "required": ["push"], "properties": {
           "push": {"type": "boolean"}, "dry_run": {"type": "boolean"}}},
       response={"type": "object", "properties": {"host": STR, "argv": arr(STR),
                                                  "known_hosts": STR, "started": {"type": "boolean"}}},
       status=202, errors=(400, 404, 409))
def host_push_install(name: str):
    b = args.body()
    if args.want(b, "push", bool, True) is not True:
        raise InvalidInput("only the push install is started here (PXE install: set mode "
                           "install)", field="push")
    state_dir = config().state_dir
    if args.want(b, "dry_run", bool, False):
        argv, known = install.push_command(conn(), state_dir, name)
        return jsonify({"host": name, "argv": argv, "known_hosts": known, "started": False})
    argv = install.start_push_install(ctx().store.conn, state_dir, name)
    return jsonify({"host": name, "argv": argv, "started": True}), 202


@route("/hosts-json", "GET", "Export hosts.json (BMC passwords only with with_secrets=true)",
       tag="hosts", params=[q("with_secrets", {"type": "boolean"}, "include BMC passwords")],
       response={"type": "object", "additionalProperties": {"type": "object"}})
def export_hosts():
    return Response(hosts.export_hosts(conn(), with_secrets=args.bool_arg("with_secrets")),
                    mimetype="application/json")


@route("/hosts-json", "POST", "Import a hosts.json (all or nothing)", tag="hosts",
       params=[q("flake", STR, "flake for entries without one"),
               q("replace", {"type": "boolean"}, "update hosts that exist")],
       body={"type": "object",
             "description": "hosts.json: name -> {mac_address | macs, flake, attr, mode}",
             "additionalProperties": {"type": "object"}},
       response={"type": "object", "properties": {"added": arr(STR), "updated": arr(STR)}},
       errors=(400, 409))
def import_hosts():
    text = request.get_data(as_text=True)
    return jsonify(hosts.import_hosts(conn(), text, default_flake=args.str_arg("flake", 2048),
                                      replace=args.bool_arg("replace")))
