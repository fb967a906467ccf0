"""The `nixie` command. Every verb works on the same DB as a running `serve`."""

from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.config.schema import DEFAULT_CONFIG_PATH, example_config, load_config
from appliance.domain import builds, events, flakes, generations, hosts, leases, settings, users
from appliance.errors import ConfigError, NixieError, NotFound
from appliance.nix.command import Nix
from appliance.nix.flake_eval import evaluate_now, refresh_flake
from appliance.state.db import Store, now
from appliance.state.status import read_status

# ------------------------------------------------------------------ output


def _ts(t: float | None) -> str:
    if not t:
        return "-"
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str | Callable]]) -> None:
    def cell(row, getter):
        v = getter(row) if callable(getter) else row.get(getter)
        return "-" if v is None or v == "" else str(v)

    table = [[h for h, _ in columns]] + [[cell(r, g) for _, g in columns] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        human()


# ------------------------------------------------------------------ context


class Ctx:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._cfg = None
        self._store = None

    @property
    def cfg(self):
        if self._cfg is None:
            self._cfg = load_config(self.args.config)
        return self._cfg

    @property
    def conn(self):
        if self._store is None:
            self._store = Store(self.cfg.db_path)
        return self._store.conn()

    @property
    def runtime_cfg(self):
        """What `nixie serve` runs with: the file, the stored overrides and network settings."""
        return settings.effective_config(self.cfg, self.conn)


# ------------------------------------------------------------------ verbs


def cmd_serve(ctx: Ctx) -> int:
    from appliance.logs import setup_logging
    from appliance.runtime.serve import serve

    cfg = ctx.cfg  # a bad config exits 2 before anything starts
    a = ctx.args
    setup_logging(a.log_level or cfg.log_level)
    if not a.hosts:
        return serve(cfg)
    from appliance.runtime import stateless
    from appliance.state.db import Store

    try:
        text = open(a.hosts).read()
    except OSError as e:
        print(f"nixie: cannot read {a.hosts}: {e.strerror}", file=sys.stderr)
        return 2
    cfg = stateless.stateless_config(cfg, a.state_dir)
    try:
        run = stateless.prepare(Store(cfg.db_path).conn(), text, a.flake)
        run.timeout = a.timeout
        code = serve(cfg, until=run.check, wake=run.names if a.wake else None)
        print(f"nixie: {run.reason or 'stopped'}", file=sys.stderr if code else sys.stdout)
        return code
    finally:
        if not a.state_dir:
            stateless.cleanup(cfg)


def cmd_config_example(ctx: Ctx) -> int:
    a = ctx.args
    print(json.dumps(example_config(a.state_dir, a.interface, a.address), indent=2))
    return 0


def cmd_config_check(ctx: Ctx) -> int:
    cfg = ctx.cfg
    emit(ctx.args, cfg.to_dict(), lambda: print(f"{cfg.path}: OK"))
    return 0


def _flake_human(r: dict[str, Any]) -> None:
    if r.get("last_error"):
        print(f"{r['url']}: evaluation failed:\n{r['last_error']}", file=sys.stderr)
    elif r.get("eval_state") != "idle":
        print(f"{r['url']}: {r['eval_state']} (nixie serve evaluates it)")
    else:
        print(f"{r['url']}: {' '.join(r['configurations']) or '(no nixosConfigurations)'}")


def cmd_flake_add(ctx: Ctx) -> int:
    """Add and evaluate (here, or wait for serve's evaluator); --no-wait only queues."""
    f = flakes.add_flake(ctx.conn, ctx.args.url)
    if ctx.args.no_wait:
        emit(ctx.args, f, lambda: print(f"added flake {f['url']} (id {f['id']}); evaluating it"))
        return 0
    if not ctx.args.json:
        print(f"added flake {f['url']} (id {f['id']}); evaluating it...", flush=True)
    r = evaluate_now(ctx.conn, Nix.from_config(ctx.runtime_cfg), f["id"])
    emit(ctx.args, r, lambda: _flake_human(r))
    return 1 if r.get("last_error") else 0


def cmd_flake_list(ctx: Ctx) -> int:
    rows = flakes.list_flakes(ctx.conn)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("ID", "id"), ("URL", "url"),
        ("CONFIGURATIONS", lambda r: " ".join(r["configurations"])),
        ("REFRESHED", lambda r: _ts(r["last_refresh"])),
        ("ERROR", lambda r: (r["last_error"] or "").splitlines()[-1:] and (r["last_error"] or "").splitlines()[-1])]))
    return 0


def cmd_flake_refresh(ctx: Ctx) -> int:
    nix = Nix.from_config(ctx.runtime_cfg)
    targets = [flakes.get_flake(ctx.conn, ctx.args.url)] if ctx.args.url else flakes.list_flakes(ctx.conn)
    results, failed = [], False
    for f in targets:
        r = refresh_flake(ctx.conn, nix, f["id"])
        results.append(r)
        failed = failed or bool(r.get("last_error"))

    def human():
        for r in results:
            _flake_human(r)

    emit(ctx.args, results, human)
    return 1 if failed else 0


def cmd_flake_remove(ctx: Ctx) -> int:
    flakes.remove_flake(ctx.conn, ctx.args.url)
    print(f"removed flake {ctx.args.url}")
    return 0


def _host_human(h: dict[str, Any]) -> None:
    for k in ("name", "macs", "flake", "attr", "mode", "state", "ip", "ip_reservation",
              "current_generation"):
        v = h.get(k)
        print(f"{k + ':':<20}{' '.join(v) if isinstance(v, list) else ('-' if v is None else v)}")
    print(f"{'last seen:':<20}{_ts(h.get('last_seen'))}")
    for e in h.get("events", [])[:10]:
        print(f"  {_ts(e['ts'])}  {e['kind']:<18} {e['message']}")


def cmd_host_add(ctx: Ctx) -> int:
    a = ctx.args
    h = hosts.add_host(ctx.conn, a.name, a.mac, a.flake, a.attr, a.mode, ip=a.ip,
                       network=ctx.cfg.lan.address if a.ip else None)
    emit(a, h, lambda: print(f"added host {h['name']} ({', '.join(h['macs'])})"))
    return 0


def cmd_host_set(ctx: Ctx) -> int:
    a = ctx.args
    h = hosts.update_host(ctx.conn, a.name, macs=a.mac, flake=a.flake, attr=a.attr, mode=a.mode,
                          ip=a.ip, network=ctx.cfg.lan.address if a.ip else None)
    emit(a, h, lambda: _host_human(h))
    return 0


def cmd_host_list(ctx: Ctx) -> int:
    rows = hosts.list_hosts(ctx.conn, search=ctx.args.search)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("NAME", "name"), ("MACS", lambda r: ",".join(r["macs"])), ("MODE", "mode"),
        ("STATE", "state"), ("IP", "ip"), ("GEN", "current_generation"),
        ("FLAKE", lambda r: f"{r['flake']}#{r['attr']}")]))
    return 0


def cmd_host_show(ctx: Ctx) -> int:
    h = hosts.get_host(ctx.conn, ctx.args.name)
    h["events"] = events.recent(ctx.conn, host_id=h["id"], limit=50)
    h["generations"] = [dict(r) for r in ctx.conn.execute(
        "SELECT number, toplevel, created_at FROM generations WHERE host_id = ? ORDER BY number DESC",
        (h["id"],))]
    emit(ctx.args, h, lambda: _host_human(h))
    return 0


def cmd_host_rollback(ctx: Ctx) -> int:
    h = generations.rollback(ctx.conn, ctx.args.name, ctx.args.to)
    emit(ctx.args, h, lambda: print(f"host {h['name']} now boots generation "
                                    f"{h['current_generation']}"))
    return 0


def cmd_host_remove(ctx: Ctx) -> int:
    hosts.remove_host(ctx.conn, ctx.args.name)
    print(f"removed host {ctx.args.name}")
    return 0


def cmd_host_import(ctx: Ctx) -> int:
    a = ctx.args
    text = sys.stdin.read() if a.file == "-" else open(a.file).read()
    r = hosts.import_hosts(ctx.conn, text, default_flake=a.flake, replace=a.replace)
    emit(a, r, lambda: print(f"imported: {len(r['added'])} added, {len(r['updated'])} updated"))
    return 0


def cmd_host_export(ctx: Ctx) -> int:
    text = hosts.export_hosts(ctx.conn)
    if ctx.args.output and ctx.args.output != "-":
        with open(ctx.args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_lease_list(ctx: Ctx) -> int:
    rows = leases.list_leases(ctx.conn, include_expired=ctx.args.all)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("IP", "ip"), ("MAC", "mac"), ("HOST", "host"), ("HOSTNAME", "hostname"),
        ("STATE", "state"), ("EXPIRES", lambda r: _ts(r["expires"]))]))
    return 0


def cmd_build(ctx: Ctx) -> int:
    a = ctx.args
    b = builds.enqueue(ctx.conn, a.host)
    if a.here:  # no serve running: build in this process
        from appliance.nix.buildworker import build_here

        b = build_here(ctx.cfg, ctx._store, b["id"])
    elif a.wait:
        b = builds.wait(ctx.conn, b["id"], timeout=a.timeout)
    emit(a, b, lambda: print(f"build {b['id']} of {b['host_name']}: {b['status']}"
                             + (f" -> {b['toplevel']}" if b.get("toplevel") else "")
                             + (f"\n{b['error']}" if b.get("error") else "")))
    if (a.wait or a.here) and b["status"] != "succeeded":
        return 1
    return 0


def cmd_build_list(ctx: Ctx) -> int:
    rows = builds.list_builds(ctx.conn, host_name=ctx.args.host)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("ID", "id"), ("HOST", "host_name"), ("STATUS", "status"),
        ("QUEUED", lambda r: _ts(r["queued_at"])), ("TOPLEVEL", "toplevel")]))
    return 0


def cmd_wol(ctx: Ctx) -> int:
    from appliance.router.wol import wake_host

    iface = ctx.cfg.lan.interface
    macs = wake_host(ctx.conn, ctx.args.host, interface=iface,
                     broadcast=ctx.args.broadcast or "255.255.255.255")
    emit(ctx.args, {"host": ctx.args.host, "macs": macs},
         lambda: print(f"woke {ctx.args.host} ({', '.join(macs)}) on {iface}"))
    return 0


def cmd_status(ctx: Ctx) -> int:
    conn = ctx.conn
    st = read_status(conn)
    running = bool(st and st.get("state") == "running" and now() - st["ts"] < 10)
    by_state = {r[0]: r[1] for r in conn.execute("SELECT state, count(*) FROM hosts GROUP BY state")}
    data = {
        "serve": {"running": running, **({k: st[k] for k in ("pid", "ts", "ok", "services")} if st else {})},
        "hosts": by_state,
        "leases_active": conn.execute("SELECT count(*) FROM leases WHERE state='bound' AND expires > ?",
                                      (now(),)).fetchone()[0],
        "builds": {r[0]: r[1] for r in conn.execute("SELECT status, count(*) FROM builds GROUP BY status")},
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
        print("builds: " + (", ".join(f"{k}={v}" for k, v in sorted(data["builds"].items())) or "none"))

    emit(ctx.args, data, human)
    return 0


def cmd_events(ctx: Ctx) -> int:
    host_id = hosts.get_host(ctx.conn, ctx.args.host)["id"] if ctx.args.host else None
    rows = events.recent(ctx.conn, limit=ctx.args.limit, host_id=host_id, kind=ctx.args.kind)
    emit(ctx.args, rows, lambda: print_table(list(reversed(rows)), [
        ("TIME", lambda r: _ts(r["ts"])), ("KIND", "kind"), ("HOST", "host"), ("MESSAGE", "message")]))
    return 0


def cmd_admin_create_user(ctx: Ctx) -> int:
    a = ctx.args
    if a.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    users.create_user(ctx.conn, a.username, password)
    print(f"created user {a.username}")
    return 0


def cmd_firewall(ctx: Ctx) -> int:
    from appliance.router import firewall

    text = firewall.render(firewall.FirewallSpec.from_config(ctx.runtime_cfg))
    if ctx.args.action == "apply":
        firewall.apply(text)
    elif ctx.args.action == "current":
        text = firewall.current()
    print(text, end="")
    return 0


def _kernel(ctx: Ctx):
    from appliance.router.network import Kernel

    return Kernel(None, ctx.cfg.state_dir)


def cmd_net_status(ctx: Ctx) -> int:
    from appliance.router import network

    st = network.status(ctx.conn, _kernel(ctx), ctx.cfg)

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
    import dataclasses

    from appliance.router import network

    a = ctx.args
    s = network.load_settings(ctx.conn, ctx.cfg)
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
    seconds = a.confirm_seconds or ctx.cfg.network.confirm_seconds
    txn = network.begin(ctx.conn, _kernel(ctx), s, seconds, timer=False,
                        firewall_text=network.firewall_for(ctx.cfg, s))
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
    from appliance.router import network

    txn = network.confirm(ctx.conn, ctx.args.txn)
    emit(ctx.args, txn, lambda: print(f"confirmed {txn['id']}"))
    return 0


def cmd_net_rollback(ctx: Ctx) -> int:
    from appliance.router import network

    txn = network.rollback(ctx.conn, _kernel(ctx), ctx.args.txn)
    emit(ctx.args, txn, lambda: print(f"{txn['id']}: {txn['state']}"))
    return 0


def cmd_net_watchdog(ctx: Ctx) -> int:
    """Roll back unconfirmed changes on time; exits when none is pending."""
    from appliance.router import network

    conn, kernel = ctx.conn, _kernel(ctx)
    while network.pending(conn):
        network.rollback_due(conn, kernel)
        time.sleep(0.2)
    return 0


def cmd_vpn_add(ctx: Ctx) -> int:
    from appliance.router import vpn

    peer = vpn.add_peer(ctx.conn, ctx.cfg, ctx.args.name, ctx.args.public_key)
    emit(ctx.args, peer, lambda: print(f"peer {peer['name']} at {peer['address']}; "
                                       f"its config: nixie vpn config {peer['name']}"))
    return 0


def cmd_vpn_list(ctx: Ctx) -> int:
    from appliance.router import vpn

    peers = vpn.list_peers(ctx.conn)
    emit(ctx.args, peers, lambda: print_table(peers, [("NAME", "name"), ("ADDRESS", "address"),
                                                      ("PUBLIC KEY", "public_key")]))
    return 0


def cmd_vpn_remove(ctx: Ctx) -> int:
    from appliance.router import vpn

    vpn.remove_peer(ctx.conn, ctx.args.name)
    return 0


def cmd_vpn_config(ctx: Ctx) -> int:
    from appliance.router import vpn

    text = vpn.client_config(ctx.conn, ctx.cfg, ctx.args.name)
    if ctx.args.qr:
        Path(ctx.args.qr).write_text(vpn.qr_svg(text))
    print(text, end="")
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=f"config file (default: $NIXIE_CONFIG, then {DEFAULT_CONFIG_PATH})")
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print JSON")

    p = argparse.ArgumentParser(prog="nixie", description="Nixie Router: PXE-boot bare metal into NixOS.")
    p.add_argument("--config", metavar="FILE", default=None,
                   help=f"config file (default: $NIXIE_CONFIG, then {DEFAULT_CONFIG_PATH})")
    p.add_argument("--json", action="store_true", default=False, help="print JSON")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    both = [common, listing]

    def leaf(parent, name, func, help_, parents=both):
        sp = parent.add_parser(name, parents=parents, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    s = leaf(sub, "serve", cmd_serve, "run DHCP, TFTP, DNS, HTTP boot, the web UI and the build worker",
             [common])
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    st = s.add_argument_group("stateless mode (proxy-DHCP, temporary state; exits when done)")
    st.add_argument("--hosts", metavar="HOSTS_JSON", help="install/boot these hosts, then exit")
    st.add_argument("--flake", metavar="REF", help="flake for hosts.json entries that name none")
    st.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    st.add_argument("--state-dir", help="keep state here instead of a temporary directory")
    st.add_argument("--no-wake", dest="wake", action="store_false", help="do not send Wake-on-LAN")

    cfgp = sub.add_parser("config", help="configuration file helpers").add_subparsers(dest="sub", required=True)
    s = leaf(cfgp, "example", cmd_config_example, "print a config that works in the lab", [])
    s.add_argument("--state-dir", default="/var/lib/nixie")
    s.add_argument("--interface", default="br-lan")
    s.add_argument("--address", default="10.77.0.1/24")
    leaf(cfgp, "check", cmd_config_check, "validate the config file")

    fl = sub.add_parser("flake", help="flake URLs").add_subparsers(dest="sub", required=True)
    s = leaf(fl, "add", cmd_flake_add, "add a flake URL and list its nixosConfigurations")
    s.add_argument("url")
    s.add_argument("--no-wait", action="store_true", help="only queue the evaluation")
    leaf(fl, "list", cmd_flake_list, "list flakes and their nixosConfigurations")
    leaf(fl, "refresh", cmd_flake_refresh, "evaluate flakes again").add_argument("url", nargs="?")
    leaf(fl, "remove", cmd_flake_remove, "remove a flake").add_argument("url")

    ho = sub.add_parser("host", help="machines").add_subparsers(dest="sub", required=True)
    s = leaf(ho, "add", cmd_host_add, "bind a host name to MAC addresses and a flake attribute")
    s.add_argument("name")
    s.add_argument("--mac", action="append", required=True, help="MAC address (repeat for more)")
    s.add_argument("--flake", required=True, help="flake reference")
    s.add_argument("--attr", help="attribute (default nixosConfigurations.NAME)")
    s.add_argument("--mode", choices=hosts.MODES, default="netboot")
    s.add_argument("--ip", help="reserve this LAN address for the host (DHCP)")
    s = leaf(ho, "set", cmd_host_set, "change a host's MACs, flake, attribute or mode")
    s.add_argument("name")
    s.add_argument("--mac", action="append")
    s.add_argument("--flake")
    s.add_argument("--attr")
    s.add_argument("--mode", choices=hosts.MODES)
    s.add_argument("--ip", help="reserve this LAN address for the host; '' clears it")
    leaf(ho, "list", cmd_host_list, "list hosts").add_argument("--search")
    leaf(ho, "show", cmd_host_show, "show one host, its generations and recent events").add_argument("name")
    leaf(ho, "remove", cmd_host_remove, "remove a host").add_argument("name")
    s = leaf(ho, "rollback", cmd_host_rollback,
             "boot an older generation by default (newer ones stay in the menu)")
    s.add_argument("name")
    s.add_argument("--to", type=int, metavar="N", help="this generation (default: the one "
                   "before the current)")
    s = leaf(ho, "import", cmd_host_import, "import a hosts.json (Nixie's form or ours)")
    s.add_argument("file", help="path, or - for stdin")
    s.add_argument("--flake", help="flake for entries that name none")
    s.add_argument("--replace", action="store_true", help="update hosts that exist")
    leaf(ho, "export", cmd_host_export, "print hosts.json").add_argument("-o", "--output")

    le = sub.add_parser("lease", help="DHCP leases").add_subparsers(dest="sub", required=True)
    leaf(le, "list", cmd_lease_list, "list leases").add_argument("--all", action="store_true",
                                                                 help="include expired and released")

    s = leaf(sub, "build", cmd_build, "queue a build of a host's system")
    s.add_argument("host")
    s.add_argument("--wait", action="store_true", help="wait until it finishes")
    s.add_argument("--timeout", type=float, default=None)
    s.add_argument("--here", action="store_true",
                   help="run the build in this process (when no serve is running)")
    leaf(sub, "builds", cmd_build_list, "list builds").add_argument("--host")

    s = leaf(sub, "wol", cmd_wol, "send Wake-on-LAN to a host")
    s.add_argument("host")
    s.add_argument("--broadcast", help="directed broadcast address")

    leaf(sub, "status", cmd_status, "appliance status")
    s = leaf(sub, "events", cmd_events, "recent events")
    s.add_argument("--host")
    s.add_argument("--kind", help="kind, or prefix*")
    s.add_argument("--limit", type=int, default=50)

    ad = sub.add_parser("admin", help="administration").add_subparsers(dest="sub", required=True)
    s = leaf(ad, "create-user", cmd_admin_create_user, "create an admin user")
    s.add_argument("username")
    s.add_argument("--password-stdin", action="store_true")

    s = leaf(sub, "firewall", cmd_firewall, "the nftables ruleset: show the generated text, "
             "apply it (nft -f, atomic), or print what the kernel holds", [common])
    s.add_argument("action", choices=["show", "apply", "current"])

    ne = sub.add_parser("net", help="interfaces: apply with automatic rollback, confirm").add_subparsers(
        dest="sub", required=True)
    leaf(ne, "status", cmd_net_status, "links, addresses, routes and the pending change")
    s = leaf(ne, "apply", cmd_net_apply, "apply network settings; they roll back unless confirmed")
    s.add_argument("--settings", metavar="FILE", help="JSON network settings (replaces the saved ones)")
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
    leaf(ne, "watchdog", cmd_net_watchdog, "roll back unconfirmed changes when due", [common])

    vp = sub.add_parser("vpn", help="WireGuard peers").add_subparsers(dest="sub", required=True)
    s = leaf(vp, "add", cmd_vpn_add, "add a peer (keys generated unless --public-key)")
    s.add_argument("name")
    s.add_argument("--public-key", help="the peer's own public key (then no config to download)")
    leaf(vp, "list", cmd_vpn_list, "list peers")
    leaf(vp, "remove", cmd_vpn_remove, "remove a peer").add_argument("name")
    s = leaf(vp, "config", cmd_vpn_config, "print a peer's client config (holds its private key)")
    s.add_argument("name")
    s.add_argument("--qr", metavar="FILE.svg", help="also write it as a QR code (SVG)")

    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    ctx = Ctx(args)
    try:
        return args.func(ctx) or 0
    except ConfigError as e:
        print(f"nixie: {e}", file=sys.stderr)
        return 2
    except NotFound as e:
        print(f"nixie: {e}", file=sys.stderr)
        return 3
    except NixieError as e:
        print(f"nixie: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
