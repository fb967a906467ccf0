"""REST API `/api/v1/...`: JSON over the same appliance functions as the UI and CLI.

Routes are declared once with `@route(...)`, which registers the Flask view
and the route's OpenAPI description; `/api/v1/openapi.json` is built from
that table, so the document cannot drift from the routes. Authentication is
the guard's (webui/security.py): a session (with X-CSRFToken on unsafe
methods) or `Authorization: Bearer <API token>`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from appliance.domain import (
    apitokens,
    builds,
    events,
    flakes,
    generations,
    hosts,
    leases,
    overview,
    settings,
)
from appliance.errors import InvalidInput
from appliance.nix import command as nix
from appliance.nix import flake_eval
from appliance.router import linkinfo, wol

from .context import config, conn, ctx
from .filters import progress_fraction, progress_phase

bp = Blueprint("api", __name__, url_prefix="/api/v1")
ROUTES: list[dict[str, Any]] = []
LOG_CHUNK = 256 * 1024


def route(path: str, method: str, summary: str, *, tag: str, params: list | None = None,
          body: dict | None = None, response: dict | None = None, status: int = 200,
          errors: tuple[int, ...] = ()):
    """Register a Flask route and its OpenAPI operation."""

    def deco(fn):
        bp.add_url_rule(path, endpoint=fn.__name__, view_func=fn, methods=[method])
        ROUTES.append({"path": path, "method": method.lower(), "summary": summary, "tag": tag,
                       "params": params or [], "body": body, "response": response,
                       "status": status, "errors": errors, "operationId": fn.__name__})
        return fn

    return deco


# ---------------------------------------------------------------- input helpers


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    return data


def _want(data: dict, key: str, kind, required: bool = False, nullable: bool = False):
    if key not in data:
        if required:
            raise InvalidInput(f"{key} is required", field=key)
        return None
    v = data[key]
    if v is None and nullable:
        return None
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is list:
        ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
    if not ok:
        names = {str: "a string", int: "an integer", bool: "true or false", list: "a list of strings"}
        raise InvalidInput(f"{key} must be {names.get(kind, kind.__name__)}", field=key)
    return v


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", field=name) from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{name} must be within {lo}..{hi}", field=name)
    return v


def _str_arg(name: str, max_len: int = 256) -> str | None:
    v = request.args.get(name)
    if v is None or v == "":
        return None
    if len(v) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len}", field=name)
    return v


def _bool_arg(name: str) -> bool:
    v = (request.args.get(name) or "").lower()
    if v in ("", "0", "false", "no"):
        return False
    if v in ("1", "true", "yes"):
        return True
    raise InvalidInput(f"{name} must be true or false", field=name)


# ---------------------------------------------------------------- OpenAPI pieces

def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def arr(schema: dict) -> dict:
    return {"type": "array", "items": schema}


def page_of(schema: dict) -> dict:
    return {"type": "object", "required": ["items", "total"], "properties": {
        "items": arr(schema), "total": {"type": "integer"},
        "limit": {"type": "integer"}, "offset": {"type": "integer"}}}


def q(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def p(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


STR = {"type": "string"}
INT = {"type": "integer"}
NAME = p("name", {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"})
LIMIT = q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})
OFFSET = q("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000})

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": STR, "field": STR}},
    "Host": {"type": "object", "properties": {
        "id": INT, "name": STR, "macs": arr(STR), "flake": STR, "attr": STR,
        "mode": {"enum": list(hosts.MODES)}, "state": {"enum": list(hosts.STATES)},
        "ip": {"type": ["string", "null"]}, "current_generation": {"type": ["integer", "null"]},
        "last_seen": {"type": ["number", "null"]}}},
    "HostInput": {"type": "object", "required": ["name", "macs", "flake"], "properties": {
        "name": STR, "macs": arr(STR), "flake": STR, "attr": STR,
        "mode": {"enum": list(hosts.MODES)}}},
    "HostPatch": {"type": "object", "properties": {
        "macs": arr(STR), "flake": STR, "attr": STR, "mode": {"enum": list(hosts.MODES)}}},
    "Generation": {"type": "object", "properties": {
        "number": INT, "build_id": {"type": ["integer", "null"]}, "toplevel": STR,
        "created_at": {"type": "number"}, "current": {"type": "boolean"}}},
    "Flake": {"type": "object", "properties": {
        "id": INT, "url": STR, "configurations": arr(STR), "locked_url": {"type": ["string", "null"]},
        "last_refresh": {"type": ["number", "null"]}, "last_error": {"type": ["string", "null"]}}},
    "Build": {"type": "object", "properties": {
        "id": INT, "host_name": STR, "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
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
        "ip": STR, "mac": STR, "host": {"type": ["string", "null"]}, "hostname": {"type": ["string", "null"]},
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
                 "only these keys may be set: " + ", ".join(settings.EDITABLE),
                 "properties": {k: {} for k in settings.EDITABLE}},
    "Status": {"type": "object", "properties": {
        "counters": {"type": "object"}, "health": {"type": "object"},
        "recent_boots": arr(ref("Event")), "build_queue": arr(ref("Build"))}},
}


# ---------------------------------------------------------------- status


@route("/status", "GET", "Counters, service health, recent boots and the build queue", tag="status",
       response=ref("Status"))
def status():
    c = conn()
    return jsonify({"counters": overview.counters(c), "health": ctx().health(),
                    "recent_boots": overview.recent_boots(c), "build_queue": overview.build_queue(c)})


# ---------------------------------------------------------------- hosts


@route("/hosts", "GET", "List hosts (search by name, MAC or IP; paginated)", tag="hosts",
       params=[q("search", STR), LIMIT, OFFSET], response=page_of(ref("Host")))
def list_hosts():
    search = _str_arg("search", 100)
    limit = _int_arg("limit", 100, 1, 1000)
    offset = _int_arg("offset", 0, 0, 10_000_000)
    c = conn()
    return jsonify({"items": hosts.list_hosts(c, search=search, limit=limit, offset=offset),
                    "total": hosts.count_hosts(c, search=search), "limit": limit, "offset": offset})


@route("/hosts", "POST", "Add a host", tag="hosts", body=ref("HostInput"), response=ref("Host"),
       status=201, errors=(400, 409))
def add_host():
    d = _body()
    macs = d.get("macs") if "macs" in d else d.get("mac")
    if isinstance(macs, str):
        macs = [macs]
    if not isinstance(macs, list) or not all(isinstance(m, str) for m in macs):
        raise InvalidInput("macs must be a list of MAC address strings", field="macs")
    h = hosts.add_host(conn(), _want(d, "name", str, True), macs, _want(d, "flake", str, True),
                       _want(d, "attr", str, nullable=True), _want(d, "mode", str) or "netboot")
    return jsonify(h), 201


@route("/hosts/<name>", "GET", "One host", tag="hosts", params=[NAME], response=ref("Host"),
       errors=(404,))
def get_host(name: str):
    return jsonify(hosts.get_host(conn(), name))


@route("/hosts/<name>", "PATCH", "Change a host's MACs, flake, attribute or mode", tag="hosts",
       params=[NAME], body=ref("HostPatch"), response=ref("Host"), errors=(400, 404, 409))
def update_host(name: str):
    d = _body()
    unknown = set(d) - {"macs", "flake", "attr", "mode"}
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    return jsonify(hosts.update_host(conn(), name, macs=_want(d, "macs", list),
                                     flake=_want(d, "flake", str), attr=_want(d, "attr", str),
                                     mode=_want(d, "mode", str)))


@route("/hosts/<name>", "DELETE", "Remove a host", tag="hosts", params=[NAME], status=204,
       errors=(404,))
def remove_host(name: str):
    hosts.remove_host(conn(), name)
    return Response(status=204)


@route("/hosts/<name>/events", "GET", "A host's boot timeline (newest first)", tag="hosts",
       params=[NAME, LIMIT], response=arr(ref("Event")), errors=(404,))
def host_events(name: str):
    h = hosts.get_host(conn(), name)
    return jsonify(events.recent(conn(), host_id=h["id"], limit=_int_arg("limit", 50, 1, 1000)))


@route("/hosts/<name>/generations", "GET", "A host's generations (newest first)", tag="hosts",
       params=[NAME], response=arr(ref("Generation")), errors=(404,))
def host_generations(name: str):
    return jsonify(generations.list_generations(conn(), name))


@route("/hosts/<name>/generation", "PUT", "Choose the generation the host boots (rollback)",
       tag="hosts", params=[NAME], body={"type": "object", "required": ["number"],
                                          "properties": {"number": {"type": "integer", "minimum": 1}}},
       response=ref("Host"), errors=(400, 404))
def set_host_generation(name: str):
    number = _want(_body(), "number", int, True)
    return jsonify(generations.set_current_generation(conn(), name, number))


@route("/hosts/<name>/wol", "POST", "Send Wake-on-LAN to every MAC of the host", tag="hosts",
       params=[NAME], response={"type": "object", "properties": {"host": STR, "macs": arr(STR)}},
       errors=(404, 502))
def wake_host(name: str):
    return jsonify({"host": name, "macs": wol.wake_host(conn(), name,
                                                       interface=config().lan.interface)})


@route("/hosts/<name>/builds", "POST", "Queue a build of the host", tag="builds", params=[NAME],
       response=ref("Build"), status=201, errors=(404,))
def build_host(name: str):
    return jsonify(builds.enqueue(conn(), name)), 201


@route("/hosts-json", "GET", "Export hosts.json", tag="hosts",
       response={"type": "object", "additionalProperties": {"type": "object"}})
def export_hosts():
    return Response(hosts.export_hosts(conn()), mimetype="application/json")


@route("/hosts-json", "POST", "Import a hosts.json (all or nothing)", tag="hosts",
       params=[q("flake", STR, "flake for entries without one"),
               q("replace", {"type": "boolean"}, "update hosts that exist")],
       body={"type": "object", "description": "hosts.json: name -> {mac_address | macs, flake, attr, mode}",
             "additionalProperties": {"type": "object"}},
       response={"type": "object", "properties": {"added": arr(STR), "updated": arr(STR)}},
       errors=(400, 409))
def import_hosts():
    text = request.get_data(as_text=True)
    return jsonify(hosts.import_hosts(conn(), text, default_flake=_str_arg("flake", 2048),
                                      replace=_bool_arg("replace")))


# ---------------------------------------------------------------- flakes


FLAKE_ID = p("flake_id", {"type": "integer", "minimum": 1})


@route("/flakes", "GET", "List flakes and their nixosConfigurations", tag="flakes",
       response=arr(ref("Flake")))
def list_flakes():
    return jsonify(flakes.list_flakes(conn()))


@route("/flakes", "POST", "Add a flake URL (evaluate it with ?refresh=true)", tag="flakes",
       params=[q("refresh", {"type": "boolean"})],
       body={"type": "object", "required": ["url"], "properties": {"url": STR}},
       response=ref("Flake"), status=201, errors=(400, 409))
def add_flake():
    f = flakes.add_flake(conn(), _want(_body(), "url", str, True))
    if _bool_arg("refresh"):
        f = flake_eval.refresh_flake(conn(), nix.Nix.from_config(config()), f["id"])
    return jsonify(f), 201


def _flake(flake_id: int) -> dict:
    return flakes.get_flake(conn(), str(flake_id))


@route("/flakes/<int:flake_id>", "GET", "One flake", tag="flakes", params=[FLAKE_ID],
       response=ref("Flake"), errors=(404,))
def get_flake(flake_id: int):
    return jsonify(_flake(flake_id))


@route("/flakes/<int:flake_id>", "DELETE", "Remove a flake", tag="flakes", params=[FLAKE_ID],
       status=204, errors=(404,))
def remove_flake(flake_id: int):
    flakes.remove_flake(conn(), _flake(flake_id)["url"])
    return Response(status=204)


@route("/flakes/<int:flake_id>/refresh", "POST", "Evaluate the flake again with nix", tag="flakes",
       params=[FLAKE_ID], response=ref("Flake"), errors=(404,))
def refresh_flake(flake_id: int):
    return jsonify(flake_eval.refresh_flake(conn(), nix.Nix.from_config(config()), _flake(flake_id)["id"]))


# ---------------------------------------------------------------- builds


BUILD_ID = p("build_id", {"type": "integer", "minimum": 1})


@route("/builds", "GET", "Recent builds, newest first", tag="builds",
       params=[q("host", STR), LIMIT], response=arr(ref("Build")))
def list_builds():
    return jsonify(builds.list_builds(conn(), host_name=_str_arg("host", 63),
                                      limit=_int_arg("limit", 50, 1, 1000)))


@route("/builds", "POST", "Queue a build of a host", tag="builds",
       body={"type": "object", "required": ["host"], "properties": {"host": STR}},
       response=ref("Build"), status=201, errors=(400, 404))
def enqueue_build():
    return jsonify(builds.enqueue(conn(), _want(_body(), "host", str, True))), 201


@route("/builds/<int:build_id>", "GET", "One build", tag="builds", params=[BUILD_ID],
       response=ref("Build"), errors=(404,))
def get_build(build_id: int):
    return jsonify(builds.get_build(conn(), build_id))


@route("/builds/<int:build_id>/log", "GET",
       "The build log from byte `offset` on, with status and progress (poll to follow)",
       tag="builds", params=[BUILD_ID, q("offset", {"type": "integer", "minimum": 0})],
       response=ref("BuildLog"), errors=(404,))
def build_log(build_id: int):
    b = builds.get_build(conn(), build_id)
    offset = _int_arg("offset", 0, 0, 2**53)
    text, new_offset, more = "", offset, False
    path = b.get("log_path")
    if path:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if offset > size:
                    offset = 0  # the log was restarted
                f.seek(offset)
                chunk = f.read(LOG_CHUNK)
                chunk = _whole_utf8(chunk)
                text = chunk.decode("utf-8", "replace")
                new_offset = offset + len(chunk)
                more = new_offset < size
        except FileNotFoundError:
            pass
    return jsonify({"offset": new_offset, "text": text, "more": more, "status": b["status"],
                    "final": b["status"] in builds.FINAL, "progress": progress_fraction(b["progress"]),
                    "phase": progress_phase(b["progress"]),
                    "toplevel": b["toplevel"], "error": b["error"], "started_at": b["started_at"],
                    "finished_at": b["finished_at"]})


def _whole_utf8(chunk: bytes) -> bytes:
    """Drop a UTF-8 sequence cut at the end of `chunk` (the next poll reads it whole)."""
    for back in range(1, min(4, len(chunk)) + 1):
        b = chunk[-back]
        if b & 0xC0 == 0x80:
            continue
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return chunk if need <= back else chunk[:-back]
        return chunk
    return chunk


# ---------------------------------------------------------------- leases, network, events


@route("/leases", "GET", "DHCP leases (active; all with ?all=true)", tag="leases",
       params=[q("all", {"type": "boolean"}), LIMIT, OFFSET], response=page_of(ref("Lease")))
def list_leases():
    include = _bool_arg("all")
    limit = _int_arg("limit", 100, 1, 1000)
    offset = _int_arg("offset", 0, 0, 10_000_000)
    c = conn()
    return jsonify({"items": leases.list_leases(c, include_expired=include, limit=limit, offset=offset),
                    "total": leases.count_leases(c, include_expired=include),
                    "limit": limit, "offset": offset})


@route("/network/interfaces", "GET", "Network interfaces and their state", tag="network",
       response=arr(ref("Interface")))
def list_interfaces():
    return jsonify(linkinfo.list_interfaces())


@route("/events", "GET", "Events, newest first; page with before=<last id>", tag="events",
       params=[q("kind", STR, "exact kind or prefix*"), q("host", STR),
               q("level", {"enum": list(events.LEVELS)}, "this level and above"),
               q("before", {"type": "integer", "minimum": 1}), LIMIT],
       response=arr(ref("Event")), errors=(400, 404))
def list_events():
    host = _str_arg("host", 63)
    host_id = hosts.get_host(conn(), host)["id"] if host else None
    level = _str_arg("level", 16)
    return jsonify(events.search(conn(), kind=_str_arg("kind", 64), host_id=host_id, level=level,
                                 before_id=_int_arg("before", 0, 0, 2**62) or None,
                                 limit=_int_arg("limit", 50, 1, 500)))


# ---------------------------------------------------------------- settings


@route("/settings", "GET", "The editable settings and their effective values", tag="settings",
       response=ref("Settings"))
def get_settings():
    return jsonify(settings.effective_values(ctx().config, conn()))


@route("/settings", "PATCH", "Change settings (all or nothing)", tag="settings",
       body=ref("Settings"), response=ref("Settings"), errors=(400,))
def update_settings():
    return jsonify(settings.update(ctx().config, conn(), _body(), who=g.user["username"]))


# ---------------------------------------------------------------- tokens


@route("/tokens", "GET", "API tokens (never their secrets)", tag="tokens", response=arr(ref("Token")))
def list_tokens():
    return jsonify(apitokens.list_tokens(conn()))


@route("/tokens", "POST", "Create an API token; the answer holds its secret, once", tag="tokens",
       body={"type": "object", "required": ["name"], "properties": {"name": STR}},
       response=ref("Token"), status=201, errors=(400,))
def create_token():
    tok, secret = apitokens.create_token(conn(), g.user["id"], _want(_body(), "name", str, True))
    return jsonify(tok | {"token": secret}), 201


@route("/tokens/<int:token_id>", "DELETE", "Revoke an API token", tag="tokens",
       params=[p("token_id", {"type": "integer", "minimum": 1})], response=ref("Token"),
       errors=(404,))
def revoke_token(token_id: int):
    return jsonify(apitokens.revoke_token(conn(), token_id))


# ---------------------------------------------------------------- the document


def _openapi_path(path: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", "/api/v1" + path)


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict] = {}
    err = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}
    for r in ROUTES:
        op: dict[str, Any] = {"operationId": r["operationId"], "summary": r["summary"],
                              "tags": [r["tag"]], "parameters": r["params"]}
        if r["body"] is not None:
            ctype = "application/json"
            op["requestBody"] = {"required": True, "content": {ctype: {"schema": r["body"]}}}
        ok: dict[str, Any] = {"description": "success"}
        if r["response"] is not None and r["status"] != 204:
            ok["content"] = {"application/json": {"schema": r["response"]}}
        op["responses"] = {str(r["status"]): ok, "401": err,
                           **{str(code): err for code in r["errors"]}}
        paths.setdefault(_openapi_path(r["path"]), {})[r["method"]] = op
    paths["/api/v1/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document", "tags": ["meta"], "parameters": [],
        "responses": {"200": {"description": "the OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Nixie Router API", "version": "1",
                 "description": "Everything the admin UI does. Authenticate with a session "
                                "(send X-CSRFToken on unsafe methods) or with "
                                "`Authorization: Bearer <API token>` (create tokens in the UI)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "nixie_session"}},
            "schemas": SCHEMAS},
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())
