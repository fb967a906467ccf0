"""IP discovery: learn hosts' addresses from the LAN's neighbour table.

Leases and agent reports give most addresses; the neighbour tables (ARP, and IPv6's
neighbour discovery for `hosts.ip6`; link-local addresses are left out) add hosts with
static or SLAAC addresses and keep `last_seen` fresh. Pure part:
`changes(neighbours, known)`; the service reads the kernel with pyroute2.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import threading
from typing import Any

from appliance.state.db import Store, now

log = logging.getLogger("nixie.discovery")
# NUD states that mean the neighbour answered recently (reachable, stale, delay, probe, permanent)
LIVE_STATES = 0x02 | 0x04 | 0x08 | 0x10 | 0x80


def read_neighbours(ifname: str, family: int = 2) -> dict[str, str]:
    """MAC -> IPv4 (family 2) or IPv6 (family 10, link-local ones left out) on `ifname`,
    live entries only."""
    from pyroute2 import IPRoute

    out: dict[str, str] = {}
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return out
        for n in ipr.get_neighbours(family=family, ifindex=idx[0]):
            mac, ip = n.get_attr("NDA_LLADDR"), n.get_attr("NDA_DST")
            if mac and ip and n["state"] & LIVE_STATES and not _link_local(ip):
                out[mac.lower()] = ip
    return out


def _link_local(ip: str) -> bool:
    """True for an IPv6 address in fe80::/10 (fe80:: to febf::, whatever its spelling)."""
    try:
        return ipaddress.IPv6Address(ip).is_link_local
    except ValueError:
        return False


def changes(neighbours: dict[str, str], known: dict[str, tuple[int, str | None]]
            ) -> list[tuple[int, str]]:
    """(host_id, ip) for every host MAC in the table whose recorded IP differs or
    that was seen again. `known` maps MAC -> (host_id, recorded ip)."""
    return [(host_id, neighbours[mac]) for mac, (host_id, _ip) in known.items() if mac in neighbours]


COLUMNS = {2: "ip", 10: "ip6"}  # address family -> the hosts column it fills


def apply(conn: sqlite3.Connection, neighbours: dict[str, str], family: int = 2) -> int:
    col = COLUMNS[family]
    known = {r["mac"]: (r["host_id"], r["ip"]) for r in conn.execute(
        f"SELECT m.mac, m.host_id, h.{col} AS ip FROM host_macs m JOIN hosts h ON h.id = m.host_id")}
    moved = 0
    t = now()
    for host_id, ip in changes(neighbours, known):
        cur = conn.execute(f"UPDATE hosts SET last_seen = ?, {col} = ? WHERE id = ? AND "
                           f"({col} IS NOT ? OR last_seen IS NULL OR last_seen < ?)",
                           (t, ip, host_id, ip, t - 30))
        moved += cur.rowcount
    return moved


class DiscoveryService:
    name = "discovery"

    def __init__(self, store: Store, interface: str, interval: float = 10.0):
        self.store = store
        self.interface = interface
        self.interval = interval
        self.updates = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                for family in COLUMNS:
                    self.updates += apply(self.store.conn(), read_neighbours(self.interface, family),
                                          family)
            except OSError as e:
                log.warning("neighbour table unreadable", extra={"error": str(e)})

    def stats(self) -> dict[str, Any]:
        return {"interface": self.interface, "updates": self.updates}
