"""`nixie build`: queue a host's build and follow it (`nixie build HOST [--wait]`, the same
as `nixie build start HOST`), `build list|show|log|cancel`; `nixie builds` is `build list`."""

from __future__ import annotations

import sys
import time
from typing import Any

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, stream, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import builds
from appliance.errors import NixieError
from appliance.nix.buildworker import build_here
from appliance.router.bmc import flows
from appliance.state.status import running_status

LOG_TAIL = 20  # log lines `build show` prints


class BuildTimeout(NixieError):
    """The build did not finish in time."""

    code = "timeout"


def progress_line(p: dict[str, Any]) -> str:
    """One line from the worker's progress counts."""
    parts = [f"{p.get('builds_done', 0)}/{p.get('builds_expected', 0)} built"]
    if p.get("paths_expected"):
        parts.append(f"{p.get('paths_fetched', 0)}/{p['paths_expected']} fetched")
    if p.get("phase"):
        parts.append(str(p["phase"]))
    if p.get("running"):
        parts.append(str(p["running"][-1]))
    return ", ".join(parts)


def describe(b: dict[str, Any]) -> str:
    return (f"build {b['id']} of {b['host_name']}: {b['status']}"
            + (f" -> {b['toplevel']}" if b.get("toplevel") else "")
            + (f"\n{b['error']}" if b.get("error") else ""))


def follow(ctx: Ctx, build_id: int, timeout: float | None) -> dict[str, Any]:
    """Stream the build's status, progress and log as it runs (stdout; stderr with --json,
    where stdout carries the final record) until it finishes; raises when serve stops
    or the build does not finish within `timeout`."""
    say = stream(ctx.args)
    for kind, item in builds.follow(ctx.conn, build_id, timeout=timeout,
                                    serve_check=lambda: builds.require_serve(ctx.conn)):
        stamp = time.strftime("%H:%M:%S")
        if kind == "status":
            say(f"[{stamp}] build {item['id']} of {item['host_name']}: {item['status']}")
        elif kind == "progress":
            say(f"[{stamp}] progress: {progress_line(item)}")
        elif kind == "log":
            say(f"  | {item}")
        elif kind == "timeout":
            raise BuildTimeout(f"build {build_id} is still {item['status']} after {timeout:g} s "
                               f"(it goes on; follow it with `nixie build log {build_id} --follow`)")
        else:
            return item
    raise AssertionError("builds.follow ended without a final build")  # pragma: no cover


def cmd_build(ctx: Ctx) -> int:
    a = ctx.args
    if a.wait and not a.here:
        builds.require_serve(ctx.conn)  # before queueing: nothing is left behind
    b = builds.enqueue(ctx.conn, a.host, reboot_after=a.reboot)
    if a.here:  # no serve running: build in this process, as serve's worker would
        b = build_here(ctx.runtime_cfg, ctx.store, b["id"])
        if a.reboot:  # and reboot here, as serve's watcher would
            b["reboot"] = [r.to_dict() for r in flows.reboot_finished_builds(
                ctx.conn, interface=ctx.runtime_cfg.lan.interface)]
    elif a.wait:
        b = follow(ctx, b["id"], a.timeout)
    elif running_status(ctx.conn) is None:
        print(f"nixie: build {b['id']} is queued, but nixie serve is not running: it builds "
              "when serve starts", file=sys.stderr)
    emit(a, b, lambda: print(describe(b)
                             + "".join("\n" + (r["outcome"]["message"] if r["outcome"] else
                                               f"{r['host']} not rebooted: {r['error']}")
                                       for r in b.get("reboot", []))))
    if (a.wait or a.here) and b["status"] != "succeeded":
        return 1
    return 0


def cmd_build_list(ctx: Ctx) -> int:
    rows = builds.list_builds(ctx.conn, host_name=ctx.args.host, limit=ctx.args.limit)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("ID", "id"), ("HOST", "host_name"), ("STATUS", "status"),
        ("QUEUED", lambda r: timestamp(r["queued_at"])), ("TOPLEVEL", "toplevel")]))
    return 0


def cmd_build_show(ctx: Ctx) -> int:
    b = builds.get_build(ctx.conn, ctx.args.id)
    b["progress"] = builds.progress_dict(b["progress"])
    tail = builds.log_tail(b, LOG_TAIL)

    def human() -> None:
        print(describe(b))
        for k in ("flake", "attr", "locked_url"):
            print(f"{k}: {b.get(k) or '-'}")
        print(f"queued: {timestamp(b['queued_at'])}  started: {timestamp(b['started_at'])}  "
              f"finished: {timestamp(b['finished_at'])}")
        if b["progress"]:
            print(f"progress: {progress_line(b['progress'])}")
        if tail:
            print(f"log (last {len(tail)} lines, all: nixie build log {b['id']}):")
            for line in tail:
                print(f"  | {line}")

    emit(ctx.args, {**b, "log_tail": tail}, human)
    return 0


def cmd_build_log(ctx: Ctx) -> int:
    a = ctx.args
    b = builds.get_build(ctx.conn, a.id)
    if a.follow and b["status"] not in builds.FINAL:
        b = follow(ctx, a.id, a.timeout)  # the log went out as it came
        emit(a, b, lambda: print(describe(b)))  # the final record, as `build --wait`
        return 0 if b["status"] == "succeeded" else 1
    text, _, _ = builds.read_log(b, 0, limit=1 << 30)
    emit(a, {"id": b["id"], "status": b["status"], "log": text},
         lambda: sys.stdout.write(text))
    return 0


def cmd_build_cancel(ctx: Ctx) -> int:
    b = builds.cancel(ctx.conn, ctx.args.id)
    emit(ctx.args, b, lambda: print(describe(b)))
    return 0


def register(sub: Subparsers) -> None:
    g = group(sub, "build", "build a host's system; list, show, follow and cancel builds",
              default="start")
    s = leaf(g, "start", cmd_build, "queue a build of a host's system "
             "(`nixie build HOST` is short for `nixie build start HOST`)")
    s.add_argument("host")
    s.add_argument("--wait", action="store_true",
                   help="follow it (status, progress, log) until it finishes; exit 1 unless it "
                        "succeeded, or when nixie serve is not running")
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after "
                   "this many seconds (exit 1; the build goes on)")
    s.add_argument("--here", action="store_true",
                   help="run the build in this process (when no serve is running)")
    s.add_argument("--reboot", action="store_true",
                   help="when the build succeeds, boot the host from the network (BMC "
                        "one-time PXE, else Wake-on-LAN); a failed build reboots nothing")
    for parent, name in ((g, "list"), (sub, "builds")):
        ls = leaf(parent, name, cmd_build_list, "list builds, newest first"
                  + (" (the same as `nixie build list`)" if parent is sub else ""))
        ls.add_argument("--host", help="only this host's builds")
        ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    leaf(g, "show", cmd_build_show, "one build, with its progress and the tail of its log"
         ).add_argument("id", type=int)
    lg = leaf(g, "log", cmd_build_log, "a build's log")
    lg.add_argument("id", type=int)
    lg.add_argument("--follow", "-f", action="store_true",
                    help="while it runs, stream it until the build finishes")
    lg.add_argument("--timeout", type=float, default=None)
    leaf(g, "cancel", cmd_build_cancel, "cancel a queued or running build"
         ).add_argument("id", type=int)
