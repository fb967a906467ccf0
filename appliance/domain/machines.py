"""Machines waiting: MACs that PXE-boot without a host record, and adopting one.

DHCP (its boot answers, written with each lease commit) and HTTP boot (a boot script
asked for by an unknown MAC) report every sighting; a row per MAC keeps when it was first
and last seen, its firmware's architecture (option 93), vendor class (option 60) and
address. The LAN is hostile: a MAC flood would grow the table without end, so it holds at
most `MAX_WAITING` rows and the least recently seen go first.

Adopting one (`adopt`) adds it as a host on a configuration of a flake and queues its
build; the machine's next retry of its boot script boots it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from appliance.config.macs import normalize_mac
from appliance.domain import builds, flakes, hosts
from appliance.domain.autobuild import host_name_for
from appliance.errors import InvalidInput, NotFound
from appliance.state.db import now, transaction

MAX_WAITING = 512
# DHCP option 93 (RFC 4578 and IANA's processor architecture types)
FIRMWARE = {0: "bios", 6: "uefi-ia32", 7: "uefi", 9: "uefi", 10: "uefi-arm32",
            11: "uefi-arm64", 15: "uefi-http-ia32", 16: "uefi-http", 18: "uefi-http-arm32",
            19: "uefi-http-arm64"}
_VENDOR_CLASS_MAX = 64


@dataclass(frozen=True)
class Sighting:
    """One boot request from a MAC that has no host record."""

    mac: str
    ts: float
    arch: int | None = None
    vendor_class: str | None = None
    ip: str | None = None


def firmware_of(arch: int | None) -> str | None:
    if arch is None:
        return None
    return FIRMWARE.get(arch, f"arch {arch}")


def sightings_of_events(evs) -> list[Sighting]:
    """The sightings in DHCP's boot events (`boot.dhcp` without a host)."""
    out = []
    for e in evs:
        if e.kind != "boot.dhcp" or e.host_id is not None or not e.mac:
            continue
        data = e.data or {}
        arch = data.get("arch")
        vc = data.get("vendor_class")
        out.append(Sighting(e.mac, e.ts, arch if isinstance(arch, int) else None,
                            vc if isinstance(vc, str) else None, e.ip))
    return out


def record(conn: sqlite3.Connection, seen: list[Sighting]) -> None:
    """Upsert the sightings (in the caller's transaction), then cap the table."""
    if not seen:
        return
    conn.executemany(
        "INSERT INTO waiting_machines (mac, first_seen, last_seen, arch, firmware, vendor_class, "
        "ip) VALUES (?,?,?,?,?,?,?) ON CONFLICT (mac) DO UPDATE SET last_seen = "
        "max(last_seen, excluded.last_seen), arch = coalesce(excluded.arch, arch), "
        "firmware = coalesce(excluded.firmware, firmware), vendor_class = "
        "coalesce(excluded.vendor_class, vendor_class), ip = coalesce(excluded.ip, ip), "
        "seen = seen + 1",
        [(s.mac, s.ts, s.ts, s.arch, firmware_of(s.arch),
          s.vendor_class[:_VENDOR_CLASS_MAX] if s.vendor_class else None, s.ip) for s in seen])
    prune(conn)


def prune(conn: sqlite3.Connection, cap: int = MAX_WAITING) -> int:
    """Keep the `cap` most recently seen rows; how many were dropped."""
    row = conn.execute("SELECT last_seen, mac FROM waiting_machines "
                       "ORDER BY last_seen DESC, mac LIMIT 1 OFFSET ?", (cap,)).fetchone()
    if row is None:
        return 0
    return conn.execute(
        "DELETE FROM waiting_machines WHERE mac IN (SELECT mac FROM waiting_machines "
        "ORDER BY last_seen DESC, mac LIMIT -1 OFFSET ?)", (cap,)).rowcount


def seen_now(conn: sqlite3.Connection, mac: str, *, ip: str | None = None) -> None:
    """HTTP boot: an unknown MAC asked for its boot script."""
    mac = normalize_mac(mac)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM host_macs WHERE mac = ?", (mac,)).fetchone():
            return
        record(conn, [Sighting(mac, now(), ip=ip)])


_WAITING = ("SELECT w.* FROM waiting_machines w WHERE NOT EXISTS "
            "(SELECT 1 FROM host_macs m WHERE m.mac = w.mac)")


def list_waiting(conn: sqlite3.Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Machines waiting, most recently seen first, each with a suggested host name."""
    rows = [dict(r) for r in conn.execute(_WAITING + " ORDER BY w.last_seen DESC LIMIT ?",
                                          (limit,))]
    for r in rows:
        r["suggested_name"] = suggested_name(conn, r["mac"])
    return rows


def count_waiting(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM (" + _WAITING + ")").fetchone()[0]


def get_waiting(conn: sqlite3.Connection, mac: str) -> dict[str, Any]:
    mac = normalize_mac(mac)
    r = conn.execute(_WAITING + " AND w.mac = ?", (mac,)).fetchone()
    if r is None:
        raise NotFound(f"no machine {mac} is waiting (it has not PXE-booted, or is a host)")
    return dict(r) | {"suggested_name": suggested_name(conn, mac)}


def forget(conn: sqlite3.Connection, mac: str) -> None:
    mac = normalize_mac(mac)
    with transaction(conn):
        if conn.execute("DELETE FROM waiting_machines WHERE mac = ?", (mac,)).rowcount == 0:
            raise NotFound(f"no machine {mac} is waiting")


def suggested_name(conn: sqlite3.Connection, mac: str, configuration: str | None = None) -> str:
    """The configuration's name when no host has it yet, else `host-<last 3 octets>`
    (or the DHCP hostname the machine sent, when it is a valid free name)."""
    taken = {r[0] for r in conn.execute("SELECT name FROM hosts")}
    if configuration:
        name = host_name_for(configuration)
        if name and name not in taken:
            return name
    lease = conn.execute("SELECT hostname FROM leases WHERE mac = ? AND hostname IS NOT NULL "
                         "AND hostname != '' ORDER BY updated_at DESC LIMIT 1", (mac,)).fetchone()
    if lease:
        name = host_name_for(lease[0])
        if name and name not in taken:
            return name
    base = "host-" + mac.replace(":", "")[-6:]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def flake_of_configuration(conn: sqlite3.Connection, configuration: str,
                           flake: str | None = None) -> dict[str, Any]:
    """The flake that lists `configuration` (the one named, or the only one that does)."""
    if flake:
        f = flakes.get_flake(conn, flake)
        if configuration not in f["configurations"]:
            raise InvalidInput(f"flake {f['url']} has no nixosConfiguration {configuration!r} "
                               f"(it has: {', '.join(f['configurations']) or 'none'})",
                               field="configuration")
        return f
    found = [f for f in flakes.list_flakes(conn) if configuration in f["configurations"]]
    if not found:
        raise InvalidInput(f"no flake lists a nixosConfiguration {configuration!r}",
                           field="configuration")
    if len(found) > 1:
        raise InvalidInput(f"{len(found)} flakes list {configuration!r}: say which flake",
                           field="flake")
    return found[0]


def configuration_choices(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(value, label) of every flake's configurations, for a picker: `<flake id>:<name>`."""
    out = []
    for f in flakes.list_flakes(conn):
        for c in f["configurations"]:
            out.append((f"{f['id']}:{c}", f"{c} ({f['url']})"))
    return out


def adopt(conn: sqlite3.Connection, mac: str, configuration: str, *, flake: str | None = None,
          name: str | None = None) -> dict[str, Any]:
    """Add the waiting machine `mac` as a host of `configuration` and queue its build.
    `name` defaults to `suggested_name`. Returns the host and its build."""
    mac = normalize_mac(mac)
    if not isinstance(configuration, str) or not configuration:
        raise InvalidInput("pick a configuration", field="configuration")
    f = flake_of_configuration(conn, configuration, flake)
    name = name or suggested_name(conn, mac, configuration)
    host = hosts.add_host(conn, name, [mac], f["url"], f"nixosConfigurations.{configuration}",
                          source="adopted")
    drv = (f["toplevels"].get(configuration) or {}).get("drv")
    with transaction(conn):
        conn.execute("DELETE FROM waiting_machines WHERE mac = ?", (mac,))
        conn.execute("UPDATE hosts SET built_drv = ? WHERE id = ?", (drv, host["id"]))
    build = builds.enqueue(conn, host["name"])
    return {"host": hosts.get_host(conn, host["name"]), "build": build}
