"""Builds: queue one, list them, one build's status and its log from an offset."""

from __future__ import annotations

from flask import jsonify, request

from appliance.domain import builds

from ..context import conn
from ..filters import progress_fraction, progress_phase
from . import args
from .registry import route
from .schemas import BUILD_ID, CURSOR, LIMIT, NAME, STR, page_of, q, ref

REBOOT = {"type": "boolean",
          "description": "when the build succeeds, boot the host from the network (BMC "
                         "one-time PXE, else Wake-on-LAN); a failed build reboots nothing"}


def _reboot_arg(d: dict) -> bool:
    return bool(args.want(d, "reboot", bool))


@route("/hosts/<name>/builds", "POST", "Queue a build of the host (and reboot it after)",
       tag="builds", params=[NAME],
       body={"type": "object", "properties": {"reboot": REBOOT}},
       response=ref("Build"), status=201, errors=(400, 404))
def build_host(name: str):
    d = args.body() if request.get_data() else {}
    return jsonify(builds.enqueue(conn(), name, reboot_after=_reboot_arg(d))), 201


@route("/hosts/<name>/build", "POST", "Queue a build of the host; with reboot, boot it from "
       "the network when the build succeeds (rebuild and reboot)", tag="builds", params=[NAME],
       body={"type": "object", "properties": {"reboot": REBOOT}},
       response=ref("Build"), status=201, errors=(400, 404))
def build_host_and_reboot(name: str):
    d = args.body() if request.get_data() else {}
    return jsonify(builds.enqueue(conn(), name, reboot_after=_reboot_arg(d))), 201


@route("/builds", "GET", "Recent builds, newest first", tag="builds",
       params=[q("host", STR), LIMIT, CURSOR], response=page_of(ref("Build")), errors=(400,))
def list_builds():
    return jsonify(args.id_page(
        lambda **at: builds.list_builds(conn(), host_name=args.str_arg("host", 63), **at), 50))


@route("/builds", "POST", "Queue a build of a host", tag="builds",
       body={"type": "object", "required": ["host"], "properties": {"host": STR,
                                                                    "reboot": REBOOT}},
       response=ref("Build"), status=201, errors=(400, 404))
def enqueue_build():
    d = args.body()
    return jsonify(builds.enqueue(conn(), args.want(d, "host", str, True),
                                  reboot_after=_reboot_arg(d))), 201


@route("/builds/<int:build_id>", "GET", "One build", tag="builds", params=[BUILD_ID],
       response=ref("Build"), errors=(404,))
def get_build(build_id: int):
    return jsonify(builds.get_build(conn(), build_id))


@route("/builds/<int:build_id>/cancel", "POST", "Cancel a queued or running build (a running "
       "build's nix is stopped within a second and its result dropped)", tag="builds",
       params=[BUILD_ID], response=ref("Build"), errors=(404, 409))
def cancel_build(build_id: int):
    return jsonify(builds.cancel(conn(), build_id))


@route("/builds/<int:build_id>/log", "GET",
       "The build log from byte `offset` on, with status and progress (poll to follow)",
       tag="builds", params=[BUILD_ID, q("offset", {"type": "integer", "minimum": 0})],
       response=ref("BuildLog"), errors=(404,))
def build_log(build_id: int):
    b = builds.get_build(conn(), build_id)
    text, new_offset, more = builds.read_log(b, args.int_arg("offset", 0, 0, 2**53))
    return jsonify({"offset": new_offset, "text": text, "more": more, "status": b["status"],
                    "final": b["status"] in builds.FINAL, "progress": progress_fraction(b["progress"]),
                    "phase": progress_phase(b["progress"]),
                    "toplevel": b["toplevel"], "error": b["error"], "started_at": b["started_at"],
                    "finished_at": b["finished_at"]})
