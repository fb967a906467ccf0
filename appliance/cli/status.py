"""`nixie status` and `nixie events`: is serve running, what happened."""

from __future__ import annotations

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, timestamp
from appliance.cli.parser import Subparsers, leaf
from appliance.domain import events, hosts, settings, tls_cert
from appliance.state.db import now
from appliance.state.status import read_status


def cmd_status(ctx: Ctx) -> int:
    conn = ctx.conn
    st = read_status(conn)
    running = settings.serve_running(conn)
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
        "web": tls_cert.web_summary(ctx.runtime_cfg),
    }

    def human():
        if running:
            print(f"serve: running (pid {st['pid']}), {'healthy' if st.get('ok') else 'DEGRADED'}")
            for name, s in st.get("services", {}).items():
                print(f"  {name:<10} {s['state']:<9} restarts={s['restarts']}"
                      + (f" last_error={s['last_error']}" if s.get("last_error") else ""))
        else:
            print("serve: not running")
        print("hosts: " + (", ".join(f"{k}={v}" for k, v in sorted(by_state.items())) or "none"))
        print(f"leases: {data['leases_active']} active")
        print("builds: " + (", ".join(f"{k}={v}" for k, v in sorted(data["builds"].items()))
                            or "none"))
        web = data["web"]
        print(f"web: {', '.join(web['urls'])}")
        if web["tls"] and web["certificate"]:
            cert = web["certificate"]
            print(f"  certificate sha256 {cert['sha256']}"
                  + (" (self-signed)" if cert["self_signed"] else "")
                  + f", valid until {cert['not_after']}")
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
