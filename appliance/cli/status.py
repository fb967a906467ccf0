"""`nixie status` and `nixie events`: is serve running, what happened."""

from __future__ import annotations

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, timestamp
from appliance.cli.parser import Subparsers, leaf
from appliance.domain import events, hosts, settings, setupcode, tls_cert
from appliance.nix.gc import STORE_DIR
from appliance.runtime.wiring import web_listen_now
from appliance.state.db import now
from appliance.state.status import disk_line, disk_use, read_status, with_storage


def cmd_status(ctx: Ctx) -> int:
    conn = ctx.conn
    st = read_status(conn)
    running = settings.serve_running(conn)
    # the disk is checked here, not only read from serve's heartbeat: on a full disk
    # serve cannot write its heartbeat
    health = with_storage({"services": (st or {}).get("services", {}) if running else {}},
                          ctx.cfg.state_dir)
    by_state = {r[0]: r[1] for r in conn.execute(
        "SELECT state, count(*) FROM hosts GROUP BY state")}
    data = {
        "serve": {"running": running,
                  **({k: st[k] for k in ("pid", "ts", "ok", "services")} if st else {})},
        "hosts": by_state,
        "leases_active": conn.execute(
            "SELECT count(*) FROM leases WHERE state='bound' AND expires > ?", (now(),)
        ).fetchone()[0],
        "builds": {r[0]: r[1] for r in conn.execute(
            "SELECT status, count(*) FROM builds GROUP BY status")},
        "storage": health["storage"],
        # measured here too (serve's gc service measures it every minute)
        "disk": (disk := disk_use(ctx.cfg.state_dir, STORE_DIR, ctx.runtime_cfg.gc.disk_warn_percent)),
        "warnings": list(dict.fromkeys(health.get("warnings", []) + disk["warnings"])),
        # never the code itself: it is in the serve log and in setup_code_file (0600)
        "setup": ({"pending": False} if settings.is_setup_complete(conn) else
                  {"pending": True,
                   "setup_code_file": str(setupcode.code_path(ctx.cfg.state_dir))}),
        "web": tls_cert.web_summary(ctx.runtime_cfg, web_listen_now(ctx.runtime_cfg, ctx.conn)),
    }

    def human():
        for w in data["warnings"]:
            print(f"WARNING: {w}")
        if running:
            print(f"serve: running (pid {st['pid']}), {'healthy' if st.get('ok') else 'DEGRADED'}")
            for name, s in st.get("services", {}).items():
                print(f"  {name:<10} {s['state']:<9} restarts={s['restarts']}"
                      + (f" last_error={s['last_error']}" if s.get("last_error") else ""))
        elif st and st.get("state") == "running" and data["warnings"]:
            print(f"serve: not reporting since {timestamp(st['ts'])} (pid {st['pid']}): "
                  "its heartbeat cannot be written")
        else:
            print("serve: not running")
        print("hosts: " + (", ".join(f"{k}={v}" for k, v in sorted(by_state.items())) or "none"))
        print(f"leases: {data['leases_active']} active")
        print(disk_line(disk))
        print("builds: " + (", ".join(f"{k}={v}" for k, v in sorted(data["builds"].items()))
                            or "none"))
        if data["setup"]["pending"]:
            print("setup: pending; the web UI's setup wizard asks for the one-time setup code in "
                  f"{data['setup']['setup_code_file']} (and in the log of nixie serve)")
        web = data["web"]
        print(f"web: {', '.join(web['urls'])}")
        if web["tls"] and web["certificate"]:
            cert = web["certificate"]
            print(f"  certificate sha256 {cert['sha256']}"
                  + (" (self-signed)" if cert["self_signed"] else "")
                  + f", valid until {cert['not_after']}")
            if web.get("previous_certificate"):
                print(f"  replaces certificate sha256 {web['previous_certificate']['sha256']}"
                      f" (kept as {web['previous_certificate']['path']}): made again for "
                      "addresses the old one lacked")
        elif web["tls"]:
            print("  certificate: not made yet (nixie serve makes it at its first start)")

    emit(ctx.args, data, human)
    return 0


def cmd_events(ctx: Ctx) -> int:
    host_id = hosts.get_host(ctx.conn, ctx.args.host)["id"] if ctx.args.host else None
    rows = events.recent(ctx.conn, limit=ctx.args.limit, host_id=host_id, kind=ctx.args.kind)
    emit(ctx.args, rows, lambda: print_table(list(reversed(rows)), [
        ("TIME", lambda r: timestamp(r["ts"])), ("KIND", "kind"), ("HOST", "host"),
        ("MESSAGE", "message")]))
    return 0


def register(sub: Subparsers) -> None:
    leaf(sub, "status", cmd_status, "appliance status")
    s = leaf(sub, "events", cmd_events, "recent events")
    s.add_argument("--host")
    s.add_argument("--kind", help="kind, or prefix*")
    s.add_argument("--limit", type=int, default=50)
