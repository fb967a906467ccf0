"""JSON schemas of the API's records and the pieces operations are declared with."""

from __future__ import annotations

from typing import Any

from appliance.domain import bmc, hosts, settings


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def arr(schema: dict) -> dict[str, Any]:
    return {"type": "array", "items": schema}


def nullable(schema: dict) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def page_of(schema: dict, total: bool = False) -> dict[str, Any]:
    """The one page shape of every paged list (webui/api/args.py `page`): `items`, and
    `next_cursor` to pass as `?cursor=` for the next page (null on the last); `total`
    where counting is cheap."""
    props: dict[str, Any] = {"items": arr(schema), "next_cursor": {"type": ["string", "null"]},
                             "limit": {"type": "integer"}}
    if total:
        props |= {"total": {"type": "integer"}, "offset": {"type": "integer"}}
    return {"type": "object", "required": ["items", "next_cursor", "limit"], "properties": props}


def q(name: str, schema: dict, description: str = "") -> dict[str, Any]:
    """A query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def p(name: str, schema: dict) -> dict[str, Any]:
    """A path parameter."""
    return {"name": name, "in": "path", "required": True, "schema": schema}


STR = {"type": "string"}
INT = {"type": "integer"}
NAME = p("name", {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"})
MAX_LIMIT = 1000  # the largest page a list gives unless its domain says less


def limit_param(maximum: int = MAX_LIMIT) -> dict[str, Any]:
    """`?limit=`, documented with the maximum the route passes to `args.id_page` /
    `args.offset_page` (the same constant in both places)."""
    return q("limit", {"type": "integer", "minimum": 1, "maximum": maximum})


LIMIT = limit_param()
OFFSET = q("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000},
           "deprecated: use cursor")
CURSOR = q("cursor", {"type": "string", "maxLength": 64},
           "the next_cursor of the page before (opaque)")
FLAKE_ID = p("flake_id", {"type": "integer", "minimum": 1})
BUILD_ID = p("build_id", {"type": "integer", "minimum": 1})
TOKEN_ID = p("token_id", {"type": "integer", "minimum": 1})

EVAL_STATES = ["queued", "evaluating", "idle"]

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {"type": "object", "required": ["error", "code"], "properties": {
        "error": STR, "code": STR, "field": STR}},
    "Host": {"type": "object", "properties": {
        "id": INT, "name": STR, "macs": arr(STR), "flake": STR, "attr": STR,
        "mode": {"enum": list(hosts.MODES)}, "state": {"enum": list(hosts.STATES)},
        "ip": {"type": ["string", "null"]}, "current_generation": {"type": ["integer", "null"]},
        "ip6": {"type": ["string", "null"],
                "description": "the host's IPv6 address on the LAN (agent report, neighbour table)"},
        "ip_reservation": {"type": ["string", "null"],
                           "description": "the LAN address DHCP always gives this host"},
        "ip6_reservation": {"type": ["string", "null"],
                            "description": "the IPv6 address DHCPv6 always gives this host"},
        "ip6_addresses": {**arr(STR), "description": "the IPv6 addresses DHCPv6 has bound to "
                                                     "its MACs now (one host only)"},
        "last_seen": {"type": ["number", "null"]},
        "source": {"enum": list(hosts.SOURCES),
                   "description": "manual, flake (declared MACs) or adopted (Machines waiting)"}}},
    "HostInput": {"type": "object", "required": ["name", "macs", "flake"], "properties": {
        "name": STR, "macs": arr(STR), "flake": STR, "attr": STR,
        "mode": {"enum": list(hosts.MODES)}, "ip_reservation": {"type": ["string", "null"]},
        "ip6_reservation": {"type": ["string", "null"]}}},
    "HostPatch": {"type": "object", "properties": {
        "macs": arr(STR), "flake": STR, "attr": STR, "mode": {"enum": list(hosts.MODES)},
        "ip_reservation": {"type": ["string", "null"], "description": "null clears it"},
        "ip6_reservation": {"type": ["string", "null"], "description": "null clears it"}}},
    "Generation": {"type": "object", "properties": {
        "number": INT, "build_id": {"type": ["integer", "null"]}, "toplevel": STR,
        "created_at": {"type": "number"}, "current": {"type": "boolean"}}},
    "Flake": {"type": "object", "properties": {
        "id": INT, "url": STR, "configurations": arr(STR), "locked_url": {"type": ["string", "null"]},
        "macs": {"type": "object", "additionalProperties": arr(STR),
                 "description": "configuration -> the MACs it declares (config.nixie.netboot.macs)"},
        "eval_state": {"enum": EVAL_STATES,
                       "description": "queued: waiting for nixie serve's evaluator; evaluating: "
                                      "nix is listing it now; idle: done (see last_error)"},
        "eval_started_at": {"type": ["number", "null"]},
        "created_at": {"type": "number"},
        "last_refresh": {"type": ["number", "null"]}, "last_error": {"type": ["string", "null"]},
        "build_policy": {"enum": ["on_change", "manual"],
                         "description": "on_change: bind declared hosts, build changed systems"},
        "toplevels": {"type": "object", "description": "configuration -> {drv, out} of its "
                      "system at the last evaluation (on_change flakes)"},
        "credential": {"enum": ["none", "token", "ssh_key"],
                       "description": "what nix fetches it with (the secret is never shown)"},
        "hook_enabled": {"type": "boolean"},
        "last_checked": {"type": ["number", "null"]}}},
    "HookSecret": {"type": "object", "required": ["secret", "url"], "properties": {
        "secret": {"type": "string", "description": "shown only in this answer"},
        "url": {"type": "string", "description": "where the forge posts (push events)"}}},
    "Machine": {"type": "object", "description": "a MAC that PXE-booted without a host record",
                "properties": {
                    "mac": STR, "first_seen": {"type": "number"}, "last_seen": {"type": "number"},
                    "arch": {"type": ["integer", "null"]}, "firmware": {"type": ["string", "null"]},
                    "vendor_class": {"type": ["string", "null"]}, "ip": {"type": ["string", "null"]},
                    "seen": INT, "suggested_name": STR}},
    "Adopted": {"type": "object", "properties": {"host": ref("Host"), "build": ref("Build")}},
    "CacheInfo": {"type": "object", "required": ["url", "public_key", "snippet"], "properties": {
        "url": STR, "public_key": {"type": ["string", "null"],
                                   "description": "null until nixie serve made the key"},
        "snippet": {"type": ["string", "null"], "description": "nix.settings for a NixOS host"}}},
    "Build": {"type": "object", "properties": {
        "id": INT, "host_name": STR,
        "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "toplevel": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
        "progress": {"type": ["string", "null"], "description": "JSON written by the build worker"},
        "queued_at": {"type": "number"}, "started_at": {"type": ["number", "null"]},
        "finished_at": {"type": ["number", "null"]}}},
    "BuildLog": {"type": "object", "required": ["offset", "text", "status"], "properties": {
        "offset": INT, "text": STR, "more": {"type": "boolean"}, "final": {"type": "boolean"},
        "status": STR, "progress": {"type": ["number", "null"], "description": "0..1"},
        "phase": {"type": ["string", "null"], "description": "what the build is doing now"},
        "toplevel": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]}}},
    "Lease": {"type": "object", "properties": {
        "family": {"type": "integer", "enum": [4, 6]},
        "ip": {"type": "string", "description": "IPv4 address, or the IPv6 address (family 6)"},
        "mac": {"type": ["string", "null"]}, "host": {"type": ["string", "null"]},
        "hostname": {"type": ["string", "null"]},
        "client_id": {"type": ["string", "null"], "description": "DHCPv4 client identifier"},
        "duid": {"type": ["string", "null"], "description": "DHCPv6 client DUID, hex"},
        "iaid": {"type": ["integer", "null"], "description": "DHCPv6 IA_NA identifier"},
        "state": STR, "starts": {"type": "number"}, "expires": {"type": "number"}}},
    "Event": {"type": "object", "properties": {
        "id": INT, "ts": {"type": "number"}, "kind": STR, "level": STR, "message": STR,
        "host": {"type": ["string", "null"]}, "mac": {"type": ["string", "null"]},
        "ip": {"type": ["string", "null"]}, "data": {}}},
    "Token": {"type": "object", "properties": {
        "id": INT, "name": STR, "user": STR, "created_at": {"type": "number"},
        "last_used": {"type": ["number", "null"]}, "revoked_at": {"type": ["number", "null"]},
        "token": {"type": "string", "description": "the secret; only in the answer to its creation"}}},
    "Interface": {"type": "object", "properties": {
        "name": STR, "state": STR, "up": {"type": "boolean"}, "mac": {"type": ["string", "null"]},
        "mtu": {"type": ["integer", "null"]}, "addresses": arr(STR)}},
    "Settings": {"type": "object", "description": "dotted config key -> value; "
                 "only these keys may be set: " + ", ".join(settings.EDITABLE)
                 + "; not those the deployment locks (see SettingsState.locked)",
                 "properties": {k: {} for k in settings.EDITABLE}},
    "ApplyStatus": {"type": "object", "description": "what nixie serve did with a change",
                    "required": ["at", "ok"], "properties": {
                        "at": {"type": "number"}, "ok": {"type": "boolean"},
                        "by": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
                        "changed": {"type": "object", "description": "key -> [old, new]"},
                        "services": arr(STR)}},
    "SettingsState": {"type": "object", "required": ["values", "locked", "apply"], "properties": {
        "values": ref("Settings"),
        "locked": {"type": "object", "additionalProperties": STR,
                   "description": "editable keys the deployment pins -> the file that sets them"},
        "apply": {**nullable(ref("ApplyStatus")),
                  "description": "PATCH: what nixie serve did with this change (null: serve did "
                                 "not answer; it applies the change when it starts); "
                                 "GET: the last change it applied"},
        "message": {"type": "string", "description": "the outcome in words (PATCH only)"}}},
    "Bmc": {"type": "object", "description": "a host's BMC; the password is never returned",
            "properties": {
                "host": STR, "kind": {"enum": list(bmc.KINDS)}, "address": STR, "port": INT,
                "username": STR, "verify_tls": {"type": "boolean"},
                "system_id": {"type": ["string", "null"]},
                "power_state": {"type": ["string", "null"], "enum": ["on", "off", None]},
                "power_checked_at": {"type": ["number", "null"]},
                "last_error": {"type": ["string", "null"]}}},
    "BmcInput": {"type": "object", "required": ["kind", "address", "username"], "properties": {
        "kind": {"enum": list(bmc.KINDS)}, "address": STR,
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "username": STR, "password": {"type": "string", "writeOnly": True},
        "verify_tls": {"type": "boolean"}, "system_id": STR}},
    "PowerResult": {"type": "object", "properties": {
        "host": STR, "action": STR, "power_state": {"type": ["string", "null"]},
        "message": STR}},
    "BootOutcome": {"type": "object", "properties": {
        "host": STR, "via": {"enum": ["bmc", "wol"]}, "action": STR, "message": STR,
        "bmc_error": {"type": ["string", "null"]}}},
    "Status": {"type": "object", "properties": {
        "counters": {"type": "object"}, "health": {"type": "object"},
        "recent_boots": arr(ref("Event")), "build_queue": arr(ref("Build"))}},
}
