"""`nixie build` and `nixie builds`: building a host's system with nix."""

from __future__ import annotations

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, timestamp
from appliance.cli.parser import Subparsers, leaf
from appliance.domain import builds
from appliance.nix.buildworker import build_here
from appliance.router.bmc import flows


def cmd_build(ctx: Ctx) -> int:
    a = ctx.args
    b = builds.enqueue(ctx.conn, a.host, reboot_after=a.reboot)
    if a.here:  # no serve running: build in this process, as serve's worker would
        b = build_here(ctx.runtime_cfg, ctx.store, b["id"])
        if a.reboot:  # and reboot here, as serve's watcher would
            b["reboot"] = [r.to_dict() for r in flows.reboot_finished_builds(
                ctx.conn, interface=ctx.runtime_cfg.lan.interface)]
    elif a.wait:
        b = builds.wait(ctx.conn, b["id"], timeout=a.timeout)
    emit(a, b, lambda: print(f"build {b['id']} of {b['host_name']}: {b['status']}"
                             + (f" -> {b['toplevel']}" if b.get("toplevel") else "")
                             + (f"\n{b['error']}" if b.get("error") else "")
                             + "".join("\n" + (r["outcome"]["message"] if r["outcome"] else
                                               f"{r['host']} not rebooted: {r['error']}")
                                       for r in b.get("reboot", []))))
    if (a.wait or a.here) and b["status"] != "succeeded":
        return 1
    return 0


def cmd_build_list(ctx: Ctx) -> int:
    rows = builds.list_builds(ctx.conn, host_name=ctx.args.host)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("ID", "id"), ("HOST", "host_name"), ("STATUS", "status"),
        ("QUEUED", lambda r: timestamp(r["queued_at"])), ("TOPLEVEL", "toplevel")]))
    return 0


def register(sub: Subparsers) -> None:
    s = leaf(sub, "build", cmd_build, "queue a build of a host's system")
    s.add_argument("host")
    s.add_argument("--wait", action="store_true", help="wait until it finishes")
    s.add_argument("--timeout", type=float, default=None)
    s.add_argument("--here", action="store_true",
                   help="run the build in this process (when no serve is running)")
    s.add_argument("--reboot", action="store_true",
                   help="when the build succeeds, boot the host from the network (BMC "
                        "one-time PXE, else Wake-on-LAN); a failed build reboots nothing")
    leaf(sub, "builds", cmd_build_list, "list builds").add_argument("--host")
