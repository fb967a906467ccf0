"""`nixie host`: machines, their MACs, flake attribute, boot mode and generations."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from appliance.cli.context import Ctx
from appliance.cli.output import done, emit, print_table, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import bmc, events, generations, hosts, machines
from appliance.domain.ipv6 import lan_prefix6
from appliance.errors import InvalidInput
from appliance.nix import install
from appliance.router.bmc import flows


def _host_human(h: dict[str, Any]) -> None:
    for k in ("name", "macs", "flake", "attr", "mode", "state", "ip", "ip6", "ip_reservation",
              "ip6_addresses", "ip6_reservation", "current_generation", "source"):
        v = h.get(k)
        print(f"{k + ':':<20}{' '.join(v) if isinstance(v, list) else ('-' if v is None else v)}")
    print(f"{'last seen:':<20}{timestamp(h.get('last_seen'))}")
    for e in h.get("events", [])[:10]:
        print(f"  {timestamp(e['ts'])}  {e['kind']:<18} {e['message']}")


def _lan(ctx: Ctx, ip: str | None) -> str | None:
    """The LAN the services run on, which a reserved address must be in."""
    return ctx.runtime_cfg.lan.address if ip else None


def _lan6(ctx: Ctx, ip6: str | None) -> str | None:
    """The LAN IPv6 prefix the services serve, which a reserved IPv6 address must be in."""
    return lan_prefix6(ctx.conn, ctx.runtime_cfg.lan.address6) if ip6 else None


def cmd_host_add(ctx: Ctx) -> int:
    a = ctx.args
    h = hosts.add_host(ctx.conn, a.name, a.mac, a.flake, a.attr, a.mode, ip=a.ip,
                       network=_lan(ctx, a.ip), ip6=a.ip6, network6=_lan6(ctx, a.ip6))
    emit(a, h, lambda: print(f"added host {h['name']} ({', '.join(h['macs'])})"))
    return 0


def cmd_host_set(ctx: Ctx) -> int:
    a = ctx.args
    h = hosts.update_host(ctx.conn, a.name, macs=a.mac, flake=a.flake, attr=a.attr, mode=a.mode,
                          ip=a.ip, network=_lan(ctx, a.ip), ip6=a.ip6,
                          network6=_lan6(ctx, a.ip6))
    emit(a, h, lambda: _host_human(h))
    return 0


def cmd_host_list(ctx: Ctx) -> int:
    rows = hosts.list_hosts(ctx.conn, search=ctx.args.search)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("NAME", "name"), ("MACS", lambda r: ",".join(r["macs"])), ("MODE", "mode"),
        ("STATE", "state"), ("IP", "ip"), ("GEN", "current_generation"),
        ("FLAKE", lambda r: f"{r['flake']}#{r['attr']}")]))
    return 0


def cmd_host_waiting(ctx: Ctx) -> int:
    rows = machines.list_waiting(ctx.conn)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("MAC", "mac"), ("FIRMWARE", "firmware"), ("VENDOR CLASS", "vendor_class"),
        ("IP", "ip"), ("FIRST SEEN", lambda r: timestamp(r["first_seen"])),
        ("LAST SEEN", lambda r: timestamp(r["last_seen"])), ("NAME", "suggested_name")]))
    return 0


def cmd_host_adopt(ctx: Ctx) -> int:
    a = ctx.args
    r = machines.adopt(ctx.conn, a.mac, a.configuration, flake=a.flake, name=a.name)
    h, b = r["host"], r["build"]
    emit(a, r, lambda: print(f"adopted {h['macs'][0]} as host {h['name']} "
                             f"({h['flake']}#{h['attr']}); build {b['id']} queued"))
    return 0


def cmd_host_show(ctx: Ctx) -> int:
    h = hosts.get_host(ctx.conn, ctx.args.name)
    h["events"] = events.recent(ctx.conn, host_id=h["id"], limit=50)
    h["generations"] = generations.list_generations(ctx.conn, h["name"])
    emit(ctx.args, h, lambda: _host_human(h))
    return 0


def cmd_host_rollback(ctx: Ctx) -> int:
    h = generations.rollback(ctx.conn, ctx.args.name, ctx.args.to)
    emit(ctx.args, h, lambda: print(f"host {h['name']} now boots generation "
                                    f"{h['current_generation']}"))
    return 0


def cmd_host_remove(ctx: Ctx) -> int:
    hosts.remove_host(ctx.conn, ctx.args.name)
    done(ctx.args, f"removed host {ctx.args.name}", name=ctx.args.name)
    return 0


def cmd_host_import(ctx: Ctx) -> int:
    a = ctx.args
    text = sys.stdin.read() if a.file == "-" else open(a.file).read()
    r = hosts.import_hosts(ctx.conn, text, default_flake=a.flake, replace=a.replace)
    emit(a, r, lambda: print(f"imported: {len(r['added'])} added, {len(r['updated'])} updated"))
    return 0


def _read_password(a) -> str | None:
    """The BMC password from --password-file or one line of stdin (never an argument:
    `ps` would show it)."""
    if a.password_file:
        with open(a.password_file) as f:
            return f.read().rstrip("\r\n")
    if a.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return None


def _bmc_human(b: bmc.Bmc | None, name: str) -> None:
    if b is None:
        print(f"host {name} has no BMC")
        return
    for k, v in b.public().items():
        print(f"{k + ':':<20}{'-' if v is None else v}")


def cmd_host_bmc(ctx: Ctx) -> int:
    a = ctx.args
    if a.clear:
        had = bmc.clear_bmc(ctx.conn, a.name)
        emit(a, {"host": a.name, "cleared": had},
             lambda: print(f"BMC of {a.name} {'removed' if had else 'was not set'}"))
        return 0
    password = _read_password(a)
    given = {k: v for k, v in (("kind", a.kind), ("address", a.address), ("port", a.port),
                               ("username", a.user), ("system_id", a.system_id))
             if v is not None}
    if not given and password is None and a.verify_tls is None:
        b = bmc.get_bmc(ctx.conn, a.name)
        emit(a, b.public() if b else None, lambda: _bmc_human(b, a.name))
        return 0
    current = bmc.get_bmc(ctx.conn, a.name)
    base = {"kind": current.kind, "address": current.address, "port": current.port,
            "username": current.username, "system_id": current.system_id,
            "verify_tls": current.verify_tls} if current else {}
    if current and "kind" in given and given["kind"] != current.kind and "port" not in given:
        base.pop("port")  # the new kind's default port
    d = base | given
    if a.verify_tls is not None:
        d["verify_tls"] = a.verify_tls
    if password is not None:
        d["password"] = password
    for k in ("kind", "address", "username"):
        if k not in d:
            raise InvalidInput(f"--{'user' if k == 'username' else k} is required", field=k)
    b = bmc.set_bmc(ctx.conn, a.name, bmc.parse_input(d))
    emit(a, b.public(), lambda: print(f"BMC of {a.name}: {b.kind} {b.username}@{b.address}:"
                                      f"{b.port} (password stored, not shown)"))
    return 0


def cmd_host_reinstall(ctx: Ctx) -> int:
    a = ctx.args
    out = flows.reinstall(ctx.conn, a.name, interface=ctx.runtime_cfg.lan.interface)
    emit(a, out.to_dict(), lambda: print(f"{a.name}: install mode; {out.message}" + (
        f" (BMC failed: {out.bmc_error})" if out.bmc_error else "")))
    return 0


def cmd_host_install(ctx: Ctx) -> int:
    """The push install: nixos-anywhere from this router, trusting only the host's pinned
    SSH key. `--dry-run` prints the command and the known_hosts line it would use."""
    a = ctx.args
    argv, known = install.push_command(ctx.conn, ctx.runtime_cfg.state_dir, a.name)
    if a.dry_run:
        emit(a, {"host": a.name, "argv": argv, "known_hosts": known},
             lambda: print(f"{shlex.join(argv)}\nknown_hosts: {known}", end=""))
        return 0
    code = install.push_install(ctx.conn, ctx.runtime_cfg.state_dir, a.name)
    emit(a, {"host": a.name, "exit_code": code}, lambda: print(
        f"{a.name}: " + ("installed by nixos-anywhere" if code == 0 else
                         f"nixos-anywhere exited {code} (see `nixie events --host {a.name}`)")))
    return 0 if code == 0 else 1


def cmd_host_export(ctx: Ctx) -> int:
    text = hosts.export_hosts(ctx.conn, with_secrets=ctx.args.with_secrets)
    if ctx.args.output and ctx.args.output != "-":
        with open(ctx.args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Subparsers) -> None:
    ho = group(sub, "host", "machines")
    s = leaf(ho, "add", cmd_host_add, "bind a host name to MAC addresses and a flake attribute")
    s.add_argument("name")
    s.add_argument("--mac", action="append", required=True, help="MAC address (repeat for more)")
    s.add_argument("--flake", required=True, help="flake reference")
    s.add_argument("--attr", help="attribute (default nixosConfigurations.NAME)")
    s.add_argument("--mode", choices=hosts.MODES, default="netboot")
    s.add_argument("--ip", help="reserve this LAN address for the host (DHCP)")
    s.add_argument("--ip6", help="reserve this LAN IPv6 address for the host (DHCPv6)")
    s = leaf(ho, "set", cmd_host_set, "change a host's MACs, flake, attribute or mode")
    s.add_argument("name")
    s.add_argument("--mac", action="append")
    s.add_argument("--flake")
    s.add_argument("--attr")
    s.add_argument("--mode", choices=hosts.MODES)
    s.add_argument("--ip", help="reserve this LAN address for the host; '' clears it")
    s.add_argument("--ip6", help="reserve this LAN IPv6 address for the host; '' clears it")
    leaf(ho, "list", cmd_host_list, "list hosts").add_argument("--search")
    leaf(ho, "waiting", cmd_host_waiting,
         "machines waiting: MACs that PXE-booted without a host record")
    s = leaf(ho, "adopt", cmd_host_adopt, "add a waiting machine as a host of a configuration "
             "and queue its build")
    s.add_argument("mac")
    # (--config after a verb is the config file, as everywhere in nixie)
    s.add_argument("--configuration", "-C", required=True, metavar="NAME",
                   help="the nixosConfiguration it boots")
    s.add_argument("--name", help="host name (default: the configuration's, if free)")
    s.add_argument("--flake", help="flake URL or id (when several list the configuration)")
    leaf(ho, "show", cmd_host_show,
         "show one host, its generations and recent events").add_argument("name")
    leaf(ho, "remove", cmd_host_remove, "remove a host").add_argument("name")
    leaf(ho, "reinstall", cmd_host_reinstall,
         "set a host to install mode and boot it from the network now (BMC one-time PXE, "
         "else Wake-on-LAN)").add_argument("name")
    s = leaf(ho, "install", cmd_host_install,
             "push the host's current generation to its disk over SSH (nixos-anywhere; the "
             "host runs its netbooted NixOS and is trusted by the key its agent reported)")
    s.add_argument("name")
    s.add_argument("--push", action="store_true", required=True,
                   help="install by pushing from this router (the PXE way is --mode install)")
    s.add_argument("--dry-run", action="store_true",
                   help="print the command and the known_hosts line, run nothing")
    s = leaf(ho, "rollback", cmd_host_rollback,
             "boot an older generation by default (newer ones stay in the menu)")
    s.add_argument("name")
    s.add_argument("--to", type=int, metavar="N", help="this generation (default: the one "
                   "before the current)")
    s = leaf(ho, "import", cmd_host_import, "import a hosts.json (Nixie's form or ours)")
    s.add_argument("file", help="path, or - for stdin")
    s.add_argument("--flake", help="flake for entries that name none")
    s.add_argument("--replace", action="store_true", help="update hosts that exist")
    s = leaf(ho, "export", cmd_host_export, "print hosts.json")
    s.add_argument("-o", "--output")
    s.add_argument("--with-secrets", action="store_true",
                   help="include BMC passwords (keep the file private)")
    s = leaf(ho, "bmc", cmd_host_bmc, "show, set or clear a host's BMC (IPMI or Redfish); "
             "the password is read from --password-file or stdin and never shown again")
    s.add_argument("name")
    s.add_argument("--kind", choices=bmc.KINDS)
    s.add_argument("--address", help="the BMC's IP address or DNS name")
    s.add_argument("--port", type=int, help="default 623 (IPMI) or 443 (Redfish)")
    s.add_argument("--user")
    s.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    s.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    s.add_argument("--system-id", help="Redfish: the ComputerSystem id (default: the only one)")
    s.add_argument("--verify-tls", dest="verify_tls", action="store_true", default=None,
                   help="Redfish: verify the BMC's certificate (the default)")
    s.add_argument("--no-verify-tls", dest="verify_tls", action="store_false",
                   help="Redfish: accept a self-signed certificate")
    s.add_argument("--clear", action="store_true", help="forget the BMC and its password")
    s.set_defaults(verify_tls=None)  # neither flag: keep what is stored
