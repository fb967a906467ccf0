"""`nixie firewall` and `nixie net`: the ruleset, and interface changes that roll
back unless confirmed."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import CONFIG, Subparsers, group, leaf
from appliance.router import firewall, network


def cmd_firewall(ctx: Ctx) -> int:
    text = firewall.render(firewall.FirewallSpec.from_config(ctx.runtime_cfg, conn=ctx.conn))
    if ctx.args.action == "apply":
        firewall.apply(text)
    elif ctx.args.action == "current":
        text = firewall.current()
    print(text, end="")
    return 0


def _kernel(ctx: Ctx) -> network.Kernel:
    return network.Kernel(None, ctx.cfg.state_dir)


def cmd_net_status(ctx: Ctx) -> int:
    st = network.status(ctx.conn, _kernel(ctx), ctx.runtime_cfg)

    def human():
        p = st["pending"]
        if p:
            print(f"pending change {p['id']}: {p['state']}, {p['seconds_left']:.0f}s to confirm")
        for name, lk in st["links"].items():
            master = f" master {lk['master']}" if lk["master"] else ""
            print(f"{name:16} {lk['kind']:7} {'up' if lk['up'] else 'down':5}{master} "
                  f"{' '.join(lk['addresses'])}")
        for r in st["routes"]:
            print(f"route {r['dst']} via {r['via'] or '-'} dev {r['dev'] or '-'}")

    emit(ctx.args, st, human)
    return 0


def cmd_net_apply(ctx: Ctx) -> int:
    a = ctx.args
    running = ctx.runtime_cfg
    s = network.load_settings(ctx.conn, running)
    if a.settings:
        s = network.NetworkSettings.from_dict(json.loads(Path(a.settings).read_text()))
    changes = {k: v for k, v in {"lan_interface": a.lan_interface, "lan_address": a.lan_address,
                                 "wan_interface": a.wan_interface, "wan_mode": a.wan_mode,
                                 "wan_address": a.wan_address, "wan_gateway": a.wan_gateway}.items()
               if v is not None}
    if a.lan_port is not None:
        changes["lan_ports"] = tuple(p for p in a.lan_port if p)
    if a.route is not None:
        routes = []
        for r in a.route:
            dst, _, via = r.partition(",")
            routes.append(network.StaticRoute(dst, via or None))
        changes["routes"] = tuple(routes)
    s = dataclasses.replace(s, **changes)
    seconds = a.confirm_seconds or running.network.confirm_seconds
    txn = network.begin(ctx.conn, _kernel(ctx), s, seconds, timer=False,
                        firewall_text=network.firewall_for(running, s, ctx.conn))
    # a detached watchdog rolls it back if nobody confirms (nixie serve also watches)
    subprocess.Popen([sys.executable, "-m", "appliance.cli.main", "net", "watchdog",
                      *(["--config", ctx.args.config] if ctx.args.config else [])],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    emit(ctx.args, txn, lambda: print(
        f"applied {len(txn['ops'])} changes as {txn['id']}; confirm within "
        f"{seconds:.0f}s: nixie net confirm {txn['id']}"))
    return 0


def cmd_net_confirm(ctx: Ctx) -> int:
    txn = network.confirm(ctx.conn, ctx.args.txn)
    emit(ctx.args, txn, lambda: print(f"confirmed {txn['id']}"))
    return 0


def cmd_net_rollback(ctx: Ctx) -> int:
    txn = network.rollback(ctx.conn, _kernel(ctx), ctx.args.txn)
    emit(ctx.args, txn, lambda: print(f"{txn['id']}: {txn['state']}"))
    return 0


def cmd_net_watchdog(ctx: Ctx) -> int:
    """Roll back unconfirmed changes on time; exits when none is pending."""
    conn, kernel = ctx.conn, _kernel(ctx)
    while network.pending(conn):
        network.rollback_due(conn, kernel)
        time.sleep(0.2)
    return 0


def register(sub: Subparsers) -> None:
    s = leaf(sub, "firewall", cmd_firewall, "the nftables ruleset: show the generated text, "
             "apply it (nft -f, atomic), or print what the kernel holds", [CONFIG])
    s.add_argument("action", choices=["show", "apply", "current"])

    ne = group(sub, "net", "interfaces: apply with automatic rollback, confirm")
    leaf(ne, "status", cmd_net_status, "links, addresses, routes and the pending change")
    s = leaf(ne, "apply", cmd_net_apply, "apply network settings; they roll back unless confirmed")
    s.add_argument("--settings", metavar="FILE",
                   help="JSON network settings (replaces the saved ones)")
    s.add_argument("--lan-interface")
    s.add_argument("--lan-address")
    s.add_argument("--lan-port", action="append", help="bridge this port into the LAN (repeat)")
    s.add_argument("--wan-interface")
    s.add_argument("--wan-mode", choices=["none", "static", "dhcp"])
    s.add_argument("--wan-address")
    s.add_argument("--wan-gateway")
    s.add_argument("--route", action="append", metavar="DST[,VIA]", help="static route (repeat)")
    s.add_argument("--confirm-seconds", type=float, default=None,
                   help="default: network.confirm_seconds")
    leaf(ne, "confirm", cmd_net_confirm, "keep a pending change").add_argument("txn")
    leaf(ne, "rollback", cmd_net_rollback, "undo a pending change now").add_argument("txn")
    leaf(ne, "watchdog", cmd_net_watchdog, "roll back unconfirmed changes when due", [CONFIG])
