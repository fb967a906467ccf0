"""Router interfaces as transactions: read the kernel, apply, roll back unless confirmed.

Three layers:
- data: `NetworkSettings` (what the admin wants: LAN bridge/ports/address, WAN
  static or DHCP, extra routes) and `NetState` (what the kernel has, for the
  links we manage);
- plain functions: `target_state(settings, current)` and `plan(current, target)`
  -> a list of `Op`s. Rolling back is the same `plan` towards the state read
  before the change;
- a thin applier (`Kernel`, over pyroute2 `IPRoute`/`NetNS`) and the
  transaction store (table `net_transactions`): `begin` persists the
  before-state and the deadline *before* touching the kernel, so a crash or a
  restart still rolls back (`rollback_due`, run by `nixie serve`'s watchdog
  and by the detached `nixie net watchdog` that `nixie net apply` starts).

A change's deadline is kept on the boot clock (CLOCK_BOOTTIME: steady, counting time
suspended) together with the boot it was made in (`boot_id`): stepping the wall clock
back cannot delay a rollback, and a change still pending after a reboot is rolled
back as soon as serve starts (its kernel state did not survive; the confirmed
settings are what the machine boots with).

`confirm(txn_id)` makes the change stay and saves the settings (settings key
`network`), which are the desired state from then on.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.errors import Conflict, InvalidInput, NixieError, NotFound
from appliance.router import firewall
from appliance.state import kv
from appliance.state.db import connect, now, transaction

log = logging.getLogger("nixie.network")
SETTINGS_KEY = "network"
DEFAULT_CONFIRM_SECONDS = 60
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
PROTO_KERNEL, PROTO_DHCP = 2, 16


class NetworkError(NixieError):
    http_status = 500


# ------------------------------------------------------------------ the desired state


@dataclass(frozen=True)
class StaticRoute:
    dst: str  # "default" or a CIDR
    via: str | None = None
    dev: str | None = None


@dataclass(frozen=True)
class NetworkSettings:
    lan_interface: str
    lan_address: str
    lan_ports: tuple[str, ...] = ()  # non-empty: lan_interface is a bridge over these
    wan_interface: str | None = None
    wan_mode: str = "none"  # none | static | dhcp
    wan_address: str | None = None
    wan_gateway: str | None = None
    routes: tuple[StaticRoute, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lan_ports"] = list(self.lan_ports)
        d["routes"] = [asdict(r) for r in self.routes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSettings:
        if not isinstance(d, dict):
            raise InvalidInput("network settings must be an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInput(f"unknown network setting {unknown[0]!r}", field=unknown[0])
        d = dict(d)
        for req in ("lan_interface", "lan_address"):
            if req not in d:
                raise InvalidInput(f"{req} is required", field=req)
        for k in ("lan_interface", "lan_address", "wan_mode"):
            if k in d and not isinstance(d[k], str):
                raise InvalidInput(f"{k} must be a string", field=k)
        for k in ("wan_interface", "wan_address", "wan_gateway"):
            if d.get(k) is not None and not isinstance(d[k], str):
                raise InvalidInput(f"{k} must be a string or null", field=k)
        ports = d.get("lan_ports") or ()
        if not isinstance(ports, list | tuple) or not all(isinstance(p, str) for p in ports):
            raise InvalidInput("lan_ports must be a list of interface names", field="lan_ports")
        d["lan_ports"] = tuple(ports)
        routes = d.get("routes") or ()
        if not isinstance(routes, list | tuple) or not all(
                isinstance(r, dict) and set(r) <= {"dst", "via", "dev"} and "dst" in r
                and all(v is None or isinstance(v, str) for v in r.values()) for r in routes):
            raise InvalidInput("routes must be a list of {dst, via, dev} strings", field="routes")
        d["routes"] = tuple(StaticRoute(**r) for r in routes)
        return _validate(cls(**d))


def _check_ifname(name: Any, fld: str) -> str:
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise InvalidInput(f"{name!r} is not an interface name", field=fld)
    return name


def _check_cidr(v: Any, fld: str) -> str:
    try:
        iface = ipaddress.IPv4Interface(v)
    except (ValueError, TypeError):
        raise InvalidInput(f"{v!r} is not an IPv4 address with prefix", field=fld) from None
    if "/" not in str(v):
        raise InvalidInput(f"{v!r} needs a prefix length, like 10.0.0.1/24", field=fld)
    return str(iface)


def _check_ip(v: Any, fld: str) -> str:
    try:
        return str(ipaddress.IPv4Address(v))
    except (ValueError, TypeError):
        raise InvalidInput(f"{v!r} is not an IPv4 address", field=fld) from None


def _validate(s: NetworkSettings) -> NetworkSettings:
    _check_ifname(s.lan_interface, "lan_interface")
    lan = _check_cidr(s.lan_address, "lan_address")
    for p in s.lan_ports:
        _check_ifname(p, "lan_ports")
    if s.lan_interface in s.lan_ports:
        raise InvalidInput("the LAN bridge cannot be one of its own ports", field="lan_ports")
    if s.wan_mode not in ("none", "static", "dhcp"):
        raise InvalidInput("wan_mode must be none, static or dhcp", field="wan_mode")
    wan_addr = gw = None
    if s.wan_mode != "none":
        _check_ifname(s.wan_interface, "wan_interface")
        if s.wan_interface == s.lan_interface or s.wan_interface in s.lan_ports:
            raise InvalidInput("the WAN interface cannot be on the LAN", field="wan_interface")
    if s.wan_mode == "static":
        wan_addr = _check_cidr(s.wan_address, "wan_address")
        if s.wan_gateway is not None:
            gw = _check_ip(s.wan_gateway, "wan_gateway")
            if ipaddress.IPv4Address(gw) not in ipaddress.IPv4Interface(wan_addr).network:
                raise InvalidInput(f"gateway {gw} is not on the WAN network", field="wan_gateway")
        if ipaddress.IPv4Interface(wan_addr).network.overlaps(ipaddress.IPv4Interface(lan).network):
            raise InvalidInput("the WAN and LAN networks overlap", field="wan_address")
    routes = []
    for i, r in enumerate(s.routes):
        fld = f"routes[{i}]"
        dst = "default" if r.dst in ("default", "0.0.0.0/0") else None
        if dst is None:
            try:
                dst = str(ipaddress.IPv4Network(r.dst))
            except (ValueError, TypeError):
                raise InvalidInput(f"{r.dst!r} is not a network like 10.1.0.0/16", field=fld) from None
        via = _check_ip(r.via, fld) if r.via is not None else None
        dev = _check_ifname(r.dev, fld) if r.dev is not None else None
        if via is None and dev is None:
            raise InvalidInput("a route needs a gateway (via) or a device", field=fld)
        routes.append(StaticRoute(dst, via, dev))
    return replace(s, lan_address=lan, wan_address=wan_addr, wan_gateway=gw, routes=tuple(routes))



def settings_from_config(cfg) -> NetworkSettings:
    wan_if = cfg.wan.interface
    mode = "none" if not wan_if else ("static" if cfg.wan.address else "dhcp")
    return _validate(NetworkSettings(
        lan_interface=cfg.lan.interface, lan_address=cfg.lan.address, wan_interface=wan_if,
        wan_mode=mode, wan_address=cfg.wan.address, wan_gateway=cfg.wan.gateway))


def load_settings(conn: sqlite3.Connection, cfg) -> NetworkSettings:
    """The confirmed settings from the UI, else the config file's."""
    stored = kv.get(conn, SETTINGS_KEY)
    if stored is None:
        return settings_from_config(cfg)
    return NetworkSettings.from_dict(stored)


def _save_settings(conn: sqlite3.Connection, s: NetworkSettings) -> None:
    kv.put(conn, SETTINGS_KEY, s.to_dict())


# ------------------------------------------------------------------ kernel state as data


@dataclass(frozen=True)
class Link:
    name: str
    kind: str = "ether"  # bridge, veth, ether (no link info), ...
    up: bool = True
    master: str | None = None
    addresses: frozenset[str] | None = frozenset()  # None: not managed (DHCP owns them)
    present: bool = True  # False in a target: the link must not exist (a bridge we made)


@dataclass(frozen=True, order=True)
class Route:
    dst: str  # "default" or CIDR
    via: str | None = None
    dev: str | None = None


@dataclass
class NetState:
    links: dict[str, Link] = field(default_factory=dict)
    routes: frozenset[Route] = frozenset()
    dhcp: frozenset[str] = frozenset()  # links with a DHCP client running

    def restrict(self, names: set[str]) -> NetState:
        return NetState({n: lk for n, lk in self.links.items() if n in names},
                        frozenset(r for r in self.routes if r.dev in names),
                        frozenset(d for d in self.dhcp if d in names))

    def to_json(self) -> str:
        return json.dumps({
            "links": [{**asdict(lk), "addresses": None if lk.addresses is None else sorted(lk.addresses)}
                      for lk in self.links.values()],
            "routes": [asdict(r) for r in sorted(self.routes)],
            "dhcp": sorted(self.dhcp)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NetState:
        d = json.loads(text)
        links = {}
        for lk in d["links"]:
            addrs = lk.pop("addresses")
            links[lk["name"]] = Link(**lk, addresses=None if addrs is None else frozenset(addrs))
        return cls(links, frozenset(Route(**r) for r in d["routes"]), frozenset(d["dhcp"]))


@dataclass(frozen=True)
class Op:
    action: str  # see Kernel.apply
    dev: str = ""
    arg: str | None = None
    via: str | None = None

    def __str__(self) -> str:
        return " ".join(x for x in (self.action, self.dev, self.arg or "", f"via {self.via}" if self.via else "") if x)


def managed_names(settings: NetworkSettings, current: NetState) -> set[str]:
    """The links a change may touch: the LAN (and its ports, old and new) and the WAN."""
    names = {settings.lan_interface, *settings.lan_ports}
    if settings.wan_interface:
        names.add(settings.wan_interface)
    names |= {n for n, lk in current.links.items() if lk.master == settings.lan_interface}
    names |= {r.dev for r in settings.routes if r.dev}
    return names


def target_state(s: NetworkSettings, current: NetState) -> NetState:
    """What the managed links should look like under settings `s`."""
    links: dict[str, Link] = {}
    missing = [p for p in (*s.lan_ports, s.wan_interface if s.wan_mode != "none" else None)
               if p and p not in current.links]
    if not s.lan_ports and s.lan_interface not in current.links:
        missing.insert(0, s.lan_interface)
    if missing:
        raise InvalidInput(f"no such interface: {', '.join(missing)}", field="interfaces")
    if s.lan_ports:
        old = current.links.get(s.lan_interface)
        if old is not None and old.kind != "bridge":
            raise InvalidInput(f"{s.lan_interface} exists and is not a bridge", field="lan_interface")
        links[s.lan_interface] = Link(s.lan_interface, "bridge", True, None,
                                      frozenset([s.lan_address]))
        for p in s.lan_ports:
            links[p] = Link(p, current.links[p].kind, True, s.lan_interface, frozenset())
    else:
        cur = current.links[s.lan_interface]
        links[s.lan_interface] = Link(s.lan_interface, cur.kind, True, None,
                                      frozenset([s.lan_address]))
    for n, lk in current.links.items():  # ports leaving the bridge
        if lk.master == s.lan_interface and n not in s.lan_ports:
            links[n] = Link(n, lk.kind, lk.up, None, None)
    routes = set()
    dhcp = set()
    if s.wan_mode != "none":
        w = current.links[s.wan_interface]
        if s.wan_mode == "static":
            links[s.wan_interface] = Link(w.name, w.kind, True, None, frozenset([s.wan_address]))
            if s.wan_gateway:
                routes.add(Route("default", s.wan_gateway, s.wan_interface))
        else:
            links[s.wan_interface] = Link(w.name, w.kind, True, None, None)
            dhcp.add(s.wan_interface)
    for r in s.routes:
        routes.add(Route(r.dst, r.via, r.dev or _dev_for(r.via, links)))
    return NetState(links, frozenset(routes), frozenset(dhcp))


def _dev_for(via: str | None, links: dict[str, Link]) -> str | None:
    if via is None:
        return None
    ip = ipaddress.IPv4Address(via)
    for lk in links.values():
        for a in lk.addresses or ():
            if ip in ipaddress.IPv4Interface(a).network:
                return lk.name
    return None


def plan(current: NetState, target: NetState) -> list[Op]:
    """Operations that take `current` to `target` (only the links `target` names, plus
    links `target` marks absent). Ordered so nothing refers to what is not there yet."""
    ops: list[Op] = []
    cur = current.links
    for d in sorted(current.dhcp - target.dhcp):
        ops.append(Op("dhcp_stop", d))
    for name, lk in sorted(target.links.items()):
        if lk.present and name not in cur and lk.kind == "bridge":
            ops.append(Op("bridge_add", name))
    # routes on links we manage statically and that the target does not keep
    static_devs = {n for n, lk in target.links.items() if lk.addresses is not None}
    for r in sorted(current.routes - target.routes):
        if r.dev in static_devs or r.dev not in target.links:
            ops.append(Op("route_del", r.dev or "", r.dst, r.via))
    for name, lk in sorted(target.links.items()):
        if lk.present:
            ops += _link_ops(name, cur.get(name), lk)
    for r in sorted(target.routes - current.routes):
        ops.append(Op("route_add", r.dev or "", r.dst, r.via))
    for d in sorted(target.dhcp - current.dhcp):
        ops.append(Op("dhcp_start", d))
    for name, lk in sorted(target.links.items()):
        if not lk.present and name in cur and cur[name].kind == "bridge":
            ops.append(Op("link_del", name))
    return ops


def _link_ops(name: str, c: Link | None, lk: Link) -> list[Op]:
    """Take present link `name` from `c` (None: it does not exist yet) to `lk`: bridge
    membership, then the addresses we manage, then up/down."""
    ops: list[Op] = []
    if lk.master is not None and (c is None or c.master != lk.master):
        ops.append(Op("master", name, lk.master))
    elif lk.master is None and c is not None and c.master is not None:
        ops.append(Op("nomaster", name))
    if lk.addresses is not None:
        have = set(c.addresses or ()) if c is not None else set()
        ops += [Op("addr_del", name, a) for a in sorted(have - lk.addresses)]
        ops += [Op("addr_add", name, a) for a in sorted(lk.addresses - have)]
    if c is None or c.up != lk.up:
        ops.append(Op("up" if lk.up else "down", name))
    return ops


def rollback_target(before: NetState, now_state: NetState) -> NetState:
    """The before-state as a target: links that did not exist then must go (if we made them)."""
    links = dict(before.links)
    for d in before.dhcp:  # the DHCP client owns those addresses again
        if d in links:
            links[d] = replace(links[d], addresses=None)
    for name, lk in now_state.links.items():
        if name not in links:
            links[name] = Link(name, lk.kind, present=False)
    return NetState(links, before.routes, before.dhcp)


# ------------------------------------------------------------------ the applier


_children: dict[int, subprocess.Popen] = {}  # DHCP clients this process started


class Kernel:
    """pyroute2 over this process's namespace, or a named one (`NetNS`)."""

    def __init__(self, netns: str | None = None, state_dir: str | Path = "/var/lib/nixie",
                 dhcp_client: str = "udhcpc"):
        self.netns = netns
        self.state_dir = Path(state_dir)
        self.dhcp_client = dhcp_client

    def _ipr(self):
        from pyroute2 import IPRoute, NetNS

        return NetNS(self.netns) if self.netns else IPRoute()

    # reading ----------------------------------------------------------
    def read(self, names: set[str] | None = None) -> NetState:
        with self._ipr() as ipr:
            by_index: dict[int, Any] = {}
            for msg in ipr.get_links():
                by_index[msg["index"]] = msg
            links: dict[str, Link] = {}
            addrs: dict[int, set[str]] = {}
            for a in ipr.get_addr(family=2):
                addrs.setdefault(a["index"], set()).add(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for idx, msg in by_index.items():
                name = msg.get_attr("IFLA_IFNAME")
                info = msg.get_attr("IFLA_LINKINFO")
                kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
                master = msg.get_attr("IFLA_MASTER")
                links[name] = Link(name, kind or "ether", bool(msg["flags"] & 1),
                                   by_index[master].get_attr("IFLA_IFNAME") if master in by_index else None,
                                   frozenset(addrs.get(idx, ())))
            routes = set()
            for r in ipr.get_routes(family=2, table=254):
                if r["proto"] in (PROTO_KERNEL, PROTO_DHCP):
                    continue
                dst = r.get_attr("RTA_DST")
                oif = r.get_attr("RTA_OIF")
                dev = by_index[oif].get_attr("IFLA_IFNAME") if oif in by_index else None
                routes.add(Route(f"{dst}/{r['dst_len']}" if dst else "default",
                                 r.get_attr("RTA_GATEWAY"), dev))
        dhcp = frozenset(n for n in links if self.dhcp_pid(n))
        state = NetState(links, frozenset(routes), dhcp)
        return state.restrict(names) if names is not None else state

    # DHCP client --------------------------------------------------------
    def _net_dir(self) -> Path:
        d = self.state_dir / "net"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _pidfile(self, dev: str) -> Path:
        tag = self.netns or "host"
        return self._net_dir() / f"dhcp-{tag}-{dev}.pid"

    def dhcp_pid(self, dev: str) -> int | None:
        try:
            pid = int(self._pidfile(dev).read_text().strip())
            child = _children.get(pid)
            if child is not None and child.poll() is not None:  # our child, exited (reaped)
                _children.pop(pid, None)
                return None
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def dhcp_script(self) -> Path:
        path = self._net_dir() / "udhcpc.script"
        path.write_text(UDHCPC_SCRIPT)
        path.chmod(0o755)
        return path

    def dhcp_command(self, dev: str) -> list[str]:
        """The DHCP client's command line (udhcpc with our own script: it never touches
        /etc/resolv.conf; or dhclient)."""
        pid = str(self._pidfile(dev))
        if self.dhcp_client == "dhclient":
            cmd = ["dhclient", "-d", "-pf", pid, "-lf", str(self._net_dir() / f"dhclient-{dev}.leases"),
                   "-sf", str(self.dhcp_script_dhclient()), dev]
        else:
            cmd = ["udhcpc", "-f", "-R", "-i", dev, "-p", pid, "-s", str(self.dhcp_script()),
                   "-t", "3", "-T", "2", "-A", "3"]
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def dhcp_script_dhclient(self) -> Path:
        path = self._net_dir() / "dhclient.script"
        path.write_text(DHCLIENT_SCRIPT)
        path.chmod(0o755)
        return path

    def dhcp_start(self, dev: str) -> None:
        if self.dhcp_pid(dev):
            return
        logf = open(self._net_dir() / f"dhcp-{dev}.log", "ab")
        child = subprocess.Popen(self.dhcp_command(dev), stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        _children[child.pid] = child  # so a long-lived process (serve) reaps it
        deadline = time.monotonic() + 5
        while not self.dhcp_pid(dev) and time.monotonic() < deadline:
            time.sleep(0.05)

    def dhcp_stop(self, dev: str) -> None:
        pid = self.dhcp_pid(dev)
        if pid:
            os.kill(pid, signal.SIGTERM)
            child = _children.pop(pid, None)
            if child is not None:
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        self._pidfile(dev).unlink(missing_ok=True)

    # applying -----------------------------------------------------------
    def apply(self, ops: list[Op]) -> None:
        """Run the operations in order; an address or route already in the wanted state
        is not an error (a rollback may meet half-applied changes)."""
        from pyroute2 import NetlinkError

        with self._ipr() as ipr:
            for op in ops:
                try:
                    self._one(ipr, op)
                except NetlinkError as e:
                    benign = {"addr_add": (17,), "route_add": (17,), "addr_del": (99, 19, 22),
                              "route_del": (3, 19), "link_del": (19,), "bridge_add": (17,)}
                    if e.code in benign.get(op.action, ()):
                        continue
                    raise NetworkError(f"{op}: {e.args[1] if len(e.args) > 1 else e}") from None

    def _index(self, ipr, name: str) -> int:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise NetworkError(f"no such interface {name}")
        return found[0]

    def _one(self, ipr, op: Op) -> None:
        a = op.action
        if a == "dhcp_start":
            self.dhcp_start(op.dev)
        elif a == "dhcp_stop":
            self.dhcp_stop(op.dev)
        elif a == "bridge_add":
            ipr.link("add", ifname=op.dev, kind="bridge", br_forward_delay=0)
        elif a == "link_del":
            ipr.link("del", index=self._index(ipr, op.dev))
        elif a == "master":
            ipr.link("set", index=self._index(ipr, op.dev), master=self._index(ipr, op.arg))
        elif a == "nomaster":
            ipr.link("set", index=self._index(ipr, op.dev), master=0)
        elif a in ("up", "down"):
            ipr.link("set", index=self._index(ipr, op.dev), state=a)
        elif a in ("addr_add", "addr_del"):
            iface = ipaddress.IPv4Interface(op.arg)
            kw = {"broadcast": str(iface.network.broadcast_address)} if a == "addr_add" and iface.network.prefixlen < 31 else {}
            ipr.addr("add" if a == "addr_add" else "del", index=self._index(ipr, op.dev),
                     address=str(iface.ip), prefixlen=iface.network.prefixlen, **kw)
        elif a in ("route_add", "route_del"):
            kw: dict[str, Any] = {"dst": "0.0.0.0/0" if op.arg == "default" else op.arg}
            if op.via:
                kw["gateway"] = op.via
            if op.dev:
                kw["oif"] = self._index(ipr, op.dev)
            ipr.route("add" if a == "route_add" else "del", **kw)
        else:
            raise NetworkError(f"unknown operation {a}")


# Both scripts leave an address that stays the same alone: removing it (a flush and an add
# at every renewal) makes the kernel drop every NAT session masqueraded behind it.
_SET_ADDRESS = r"""
prefix_of() {  # 255.255.255.0 -> 24
  n=0
  old_ifs=$IFS
  IFS=.
  set -- $1
  IFS=$old_ifs
  for o in "$@"; do
    case "$o" in
      255) n=$((n + 8)) ;; 254) n=$((n + 7)) ;; 252) n=$((n + 6)) ;; 248) n=$((n + 5)) ;;
      240) n=$((n + 4)) ;; 224) n=$((n + 3)) ;; 192) n=$((n + 2)) ;; 128) n=$((n + 1)) ;;
    esac
  done
  echo "$n"
}
set_address() {  # set_address DEV IP MASK: DEV ends with IP/prefix only, untouched if so
  want="$2/$(prefix_of "$3")"
  ip -4 -o addr show dev "$1" | while read -r _n _dev _family have _rest; do
    [ "$have" = "$want" ] || ip addr del "$have" dev "$1"
  done
  ip -4 -o addr show dev "$1" | grep -q " $want " || ip addr add "$want" dev "$1"
}
"""

UDHCPC_SCRIPT = """#!/bin/sh
# written by nixie: configures the WAN from udhcpc; never touches resolv.conf
""" + _SET_ADDRESS + """
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    set_address "$interface" "$ip" "$subnet"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
# written by nixie: configures the WAN from dhclient; never touches resolv.conf
""" + _SET_ADDRESS + """
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    set_address "$interface" "$new_ip_address" "$new_subnet_mask"
    for r in $new_routers; do ip route replace default via "$r" dev "$interface"; break; done
    ;;
  EXPIRE|FAIL|RELEASE|STOP)
    ip -4 addr flush dev "$interface"
    ;;
esac
exit 0
"""


# ------------------------------------------------------------------ transactions

_lock = threading.Lock()
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def _boot_clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _boot_id() -> str:
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Clocks:
    """The clocks of a change's deadline: `wall` (shown, and the deadline of changes made
    before the boot clock was recorded), `boot` (the deadline itself: steady across wall
    clock steps and suspend) and `boot_id` (which boot `boot` counts from). Tests pass
    their own."""

    wall: Callable[[], float] = now
    boot: Callable[[], float] = _boot_clock
    boot_id: Callable[[], str] = _boot_id


SYSTEM_CLOCKS = Clocks()


def due_reason(row: sqlite3.Row, clocks: Clocks = SYSTEM_CLOCKS) -> str | None:
    """Why pending change `row` must be rolled back now, or None while it may be confirmed."""
    if row["boot_id"] is None or row["deadline_boottime"] is None:  # made before issue 15
        return "not confirmed in time" if row["deadline"] <= clocks.wall() else None
    if row["boot_id"] != clocks.boot_id():
        return "the machine restarted before the change was confirmed"
    return "not confirmed in time" if row["deadline_boottime"] <= clocks.boot() else None


def _seconds_left(row: sqlite3.Row, clocks: Clocks) -> float:
    if row["state"] != "pending" or due_reason(row, clocks) is not None:
        return 0.0
    if row["deadline_boottime"] is None:
        return max(0.0, row["deadline"] - clocks.wall())
    return max(0.0, row["deadline_boottime"] - clocks.boot())


def _row(conn: sqlite3.Connection, txn_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM net_transactions WHERE id = ?", (txn_id,)).fetchone()
    if row is None:
        raise NotFound(f"no network transaction {txn_id}")
    return row


def txn_dict(row: sqlite3.Row, clocks: Clocks = SYSTEM_CLOCKS) -> dict[str, Any]:
    return {"id": row["id"], "state": row["state"], "created_at": row["created_at"],
            "deadline": row["deadline"], "desired": json.loads(row["desired"]),
            "ops": json.loads(row["ops"]), "finished_at": row["finished_at"], "error": row["error"],
            "seconds_left": _seconds_left(row, clocks)}


def pending(conn: sqlite3.Connection, clocks: Clocks = SYSTEM_CLOCKS) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM net_transactions WHERE state IN ('pending', 'rolling_back') "
                       "ORDER BY created_at DESC LIMIT 1").fetchone()
    return txn_dict(row, clocks) if row else None


def begin(conn: sqlite3.Connection, kernel: Kernel, settings: NetworkSettings,
          confirm_seconds: float = DEFAULT_CONFIRM_SECONDS, *, timer: bool = True,
          firewall_text: str | None = None, clocks: Clocks = SYSTEM_CLOCKS,
          apply_delay: float = 0.0) -> dict[str, Any]:
    """Apply `settings` now; it rolls back by itself after `confirm_seconds` unless
    `confirm`ed. One transaction at a time (Conflict otherwise). With `firewall_text`
    (see `firewall_for`), the ruleset is replaced too, and restored on rollback.

    With `apply_delay`, the transaction (and its deadline) starts now but the kernel is
    changed that many seconds later, in a thread: the web UI answers the request first,
    so a browser the change cuts off has the page with the countdown already."""
    settings = _validate(settings)
    if not 5 <= confirm_seconds <= 3600:
        raise InvalidInput("confirm window must be 5..3600 seconds", field="confirm_seconds")
    with _lock:
        current = kernel.read()
        names = managed_names(settings, current)
        target = target_state(settings, current)
        before = current.restrict(names)
        ops = plan(before, target)
        txn_id = uuid.uuid4().hex[:12]
        t = clocks.wall()
        fw_before = None
        if firewall_text is not None:
            fw_before = firewall.current(netns=kernel.netns)
        with transaction(conn):
            if conn.execute("SELECT 1 FROM net_transactions WHERE state IN ('pending', 'rolling_back')"
                            ).fetchone():
                raise Conflict("another network change is waiting for confirmation")
            conn.execute("INSERT INTO net_transactions (id, state, created_at, deadline, before, "
                         "desired, ops, netns, firewall_before, boot_id, deadline_boottime) "
                         "VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (txn_id, t, t + confirm_seconds, before.to_json(),
                          json.dumps(settings.to_dict()), json.dumps([str(o) for o in ops]),
                          kernel.netns, fw_before, clocks.boot_id(),
                          clocks.boot() + confirm_seconds))
        if apply_delay <= 0:
            _apply_txn(conn, kernel, txn_id, ops, firewall_text, confirm_seconds)
    if apply_delay > 0:
        _apply_later(conn, kernel, txn_id, ops, firewall_text, confirm_seconds, apply_delay)
    if timer:
        _start_timer(conn, kernel, txn_id, confirm_seconds, clocks)
    return txn_dict(_row(conn, txn_id), clocks)


def _apply_txn(conn, kernel: Kernel, txn_id: str, ops: list[Op], firewall_text: str | None,
               confirm_seconds: float) -> None:
    """Change the kernel for transaction `txn_id` (the caller holds `_lock`); a failure
    rolls back at once and is raised."""
    log.info("network change applied; confirm or it rolls back",
             extra={"txn": txn_id, "ops": len(ops), "seconds": confirm_seconds})
    try:
        kernel.apply(ops)
        if firewall_text is not None:
            firewall.apply(firewall_text, netns=kernel.netns)
    except Exception as e:
        _rollback(conn, kernel, txn_id, reason=f"apply failed: {e}")
        raise


def _apply_later(conn, kernel: Kernel, txn_id: str, ops: list[Op], firewall_text: str | None,
                 confirm_seconds: float, delay: float) -> None:
    path = conn.execute("PRAGMA database_list").fetchone()["file"]

    def run():
        time.sleep(delay)
        c = connect(path, migrate=False)
        try:
            with _lock:
                # confirmed already (a quick admin): apply it all the same; reverted or
                # rolled back before it was applied: nothing to do
                if _row(c, txn_id)["state"] not in ("pending", "confirmed"):
                    return
                _apply_txn(c, kernel, txn_id, ops, firewall_text, confirm_seconds)
        except Exception:  # noqa: BLE001 - recorded on the transaction by _rollback
            log.exception("delayed network change failed", extra={"txn": txn_id})
        finally:
            c.close()

    threading.Thread(target=run, name=f"net-apply-{txn_id}", daemon=True).start()


def get_transaction(conn: sqlite3.Connection, txn_id: str,
                    clocks: Clocks = SYSTEM_CLOCKS) -> dict[str, Any]:
    """One network change, whatever its state (NotFound when there is none of that id)."""
    return txn_dict(_row(conn, txn_id), clocks)


def _start_timer(conn, kernel: Kernel, txn_id: str, seconds: float, clocks: Clocks) -> None:
    path = conn.execute("PRAGMA database_list").fetchone()["file"]

    def fire():
        c = connect(path, migrate=False)
        try:
            rollback_due(c, kernel, clocks)
        except Exception:  # noqa: BLE001 - the watchdog retries
            log.exception("timed rollback failed", extra={"txn": txn_id})
        finally:
            c.close()

    t = threading.Timer(seconds + 0.05, fire)
    t.daemon = True
    t.start()


def confirm(conn: sqlite3.Connection, txn_id: str, clocks: Clocks = SYSTEM_CLOCKS
            ) -> dict[str, Any]:
    """Keep the change (before its deadline) and make its settings the saved ones."""
    with transaction(conn):
        row = _row(conn, txn_id)
        if row["state"] != "pending":
            raise Conflict(f"transaction {txn_id} is {row['state']}, not pending")
        why = due_reason(row, clocks)
        if why is not None:
            raise Conflict(f"transaction {txn_id} is past its deadline and is being rolled back"
                           f" ({why})")
        conn.execute("UPDATE net_transactions SET state = 'confirmed', finished_at = ? WHERE id = ?",
                     (now(), txn_id))
        _save_settings(conn, NetworkSettings.from_dict(json.loads(row["desired"])))
    log.info("network change confirmed", extra={"txn": txn_id})
    return txn_dict(_row(conn, txn_id), clocks)


def rollback(conn: sqlite3.Connection, kernel: Kernel, txn_id: str) -> dict[str, Any]:
    """Undo a pending change now (the admin's 'revert')."""
    with _lock:
        _rollback(conn, kernel, txn_id, reason="reverted by the admin")
    return txn_dict(_row(conn, txn_id))


STALE_CLAIM_SECONDS = 60.0


def claim_rollback(conn: sqlite3.Connection, txn_id: str) -> bool:
    """True for exactly one caller per rollback."""
    with transaction(conn):
        # Exactly one runner (the applying process's timer, serve's watchdog, the
        # detached `nixie net watchdog`) rolls back; a claim left by a runner that
        # died mid-rollback is taken over once it is stale.
        t = now()
        claimed = conn.execute(
            "UPDATE net_transactions SET state = 'rolling_back', claimed_at = ? WHERE id = ? "
            "AND (state = 'pending' OR (state = 'rolling_back' AND "
            "coalesce(claimed_at, 0) < ?))", (t, txn_id, t - STALE_CLAIM_SECONDS)).rowcount
    return claimed == 1


def _rollback(conn, kernel: Kernel, txn_id: str, reason: str) -> bool:
    if not claim_rollback(conn, txn_id):
        return False
    row = _row(conn, txn_id)
    before = NetState.from_json(row["before"])
    k = kernel if kernel.netns == row["netns"] else Kernel(row["netns"], kernel.state_dir,
                                                           kernel.dhcp_client)
    current = k.read()
    target = rollback_target(before, current.restrict(set(before.links) | _new_bridges(before, current)))
    ops = plan(current.restrict(set(target.links)), target)
    error = None
    try:
        k.apply(ops)
    except Exception as e:  # noqa: BLE001 - recorded; state 'failed' needs the admin
        error = str(e)
    if row["firewall_before"] is not None:
        try:
            if row["firewall_before"].strip():
                firewall.apply(f"table inet {firewall.TABLE}\ndelete table inet {firewall.TABLE}\n"
                               + row["firewall_before"], netns=k.netns)
            else:
                firewall.remove(netns=k.netns)
        except Exception as e:  # noqa: BLE001
            error = f"{error + '; ' if error else ''}firewall: {e}"
    conn.execute("UPDATE net_transactions SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                 ("failed" if error else "rolled_back", now(), error or reason, txn_id))
    log.warning("network change rolled back", extra={"txn": txn_id, "reason": reason,
                                                      "ops": len(ops), "error": error})
    return True


def _new_bridges(before: NetState, current: NetState) -> set[str]:
    """Bridges that exist now, did not before, and whose ports were ours."""
    return {n for n, lk in current.links.items()
            if lk.kind == "bridge" and n not in before.links
            and any(p.master == n for p in current.links.values() if p.name in before.links)}


def rollback_due(conn: sqlite3.Connection, kernel: Kernel | None = None,
                 clocks: Clocks = SYSTEM_CLOCKS) -> list[str]:
    """Roll back every pending change past its deadline on the boot clock, or made before
    the last reboot (also after a crash), and finish rollbacks a dead runner left. Returns ids."""
    rows = conn.execute("SELECT * FROM net_transactions WHERE state IN ('pending', 'rolling_back')"
                        ).fetchall()
    done = []
    for row in rows:
        why = "interrupted rollback" if row["state"] == "rolling_back" else due_reason(row, clocks)
        if why is None:
            continue
        k = kernel or Kernel(row["netns"])
        with _lock:
            if _rollback(conn, k, row["id"], reason=why):
                done.append(row["id"])
    return done


def firewall_for(cfg, settings: NetworkSettings, conn: sqlite3.Connection | None = None
                 ) -> str | None:
    """The ruleset to apply with `settings` (None when firewall.enable is off); `conn`
    gives the stored LAN IPv6 prefix (ULA)."""
    if cfg is None or not cfg.firewall.enable:
        return None
    return firewall.render(firewall.spec_for(cfg, settings, conn))


def status(conn: sqlite3.Connection, kernel: Kernel, cfg) -> dict[str, Any]:
    """For the UI: saved settings, what the kernel has, the pending change."""
    settings = load_settings(conn, cfg)
    current = kernel.read()
    names = managed_names(settings, current)
    st = current.restrict(names)
    return {"settings": settings.to_dict(), "pending": pending(conn),
            "links": {n: {"kind": lk.kind, "up": lk.up, "master": lk.master,
                          "addresses": sorted(lk.addresses or ())} for n, lk in sorted(st.links.items())},
            "routes": [asdict(r) for r in sorted(st.routes)], "dhcp": sorted(st.dhcp)}


def apply_saved(conn: sqlite3.Connection, kernel: Kernel, cfg) -> list[str]:
    """Bring the interfaces to the saved settings (config, then confirmed UI changes), as
    at boot; no transaction: this is the confirmed state. Returns the operations run."""
    settings = load_settings(conn, cfg)
    with _lock:
        current = kernel.read()
        target = target_state(settings, current)
        ops = plan(current.restrict(managed_names(settings, current)), target)
        kernel.apply(ops)
    text = firewall_for(cfg, settings, conn)
    if text is not None:
        firewall.apply(text, netns=kernel.netns)
    if ops:
        log.info("network settings applied", extra={"ops": len(ops)})
    return [str(o) for o in ops]


class NetworkWatchdog:
    """`nixie serve`'s service: rolls back unconfirmed changes when their time is up,
    including those left pending by a process that died; with `network.manage`, first
    sets the interfaces up from the saved settings."""

    name = "network"

    def __init__(self, store, state_dir: str, interval: float = 0.5, cfg=None):
        self.store = store
        self.state_dir = state_dir
        self.interval = interval
        self.cfg = cfg
        self.rolled_back = 0
        self.applied_at_start: list[str] | None = None

    def run(self, stop: threading.Event) -> None:
        first = True
        while True:
            conn = self.store.conn()
            for row in conn.execute("SELECT netns FROM net_transactions WHERE state IN "
                                    "('pending', 'rolling_back') GROUP BY netns").fetchall():
                self.rolled_back += len(rollback_due(conn, Kernel(row["netns"], self.state_dir)))
            if first and self.cfg is not None and self.cfg.network.manage and pending(conn) is None:
                self.applied_at_start = apply_saved(conn, Kernel(None, self.state_dir), self.cfg)
            first = False
            if stop.wait(self.interval):
                return

    def stats(self) -> dict[str, Any]:
        return {"rolled_back": self.rolled_back, "applied_at_start": self.applied_at_start}


# ------------------------------------------------------------------ for the web UI


WEB_APPLY_DELAY = 1.0  # seconds between the web UI's answer and the kernel change


def apply_settings(conn: sqlite3.Connection, cfg, settings: NetworkSettings | dict[str, Any],
                   confirm_seconds: float | None = None, *, apply_delay: float = 0.0
                   ) -> dict[str, Any]:
    """What the UI's "apply" calls: validate (InvalidInput names the field), apply with the
    firewall following, and roll back by itself unless `confirm`ed within `confirm_seconds`."""
    if isinstance(settings, dict):
        settings = NetworkSettings.from_dict(settings)
    return begin(conn, Kernel(None, cfg.state_dir), settings,
                 confirm_seconds or cfg.network.confirm_seconds,
                 firewall_text=firewall_for(cfg, settings, conn), apply_delay=apply_delay)


def revert(conn: sqlite3.Connection, cfg, txn_id: str) -> dict[str, Any]:
    """What the UI's "revert now" calls."""
    return rollback(conn, Kernel(None, cfg.state_dir), txn_id)


def current_status(conn: sqlite3.Connection, cfg) -> dict[str, Any]:
    """What the UI's network page shows."""
    return status(conn, Kernel(None, cfg.state_dir), cfg)
