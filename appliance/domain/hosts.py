"""Hosts: a name, one or more MACs, a flake reference and attribute, a boot mode.

These functions are the one way hosts change: the CLI, the REST API and the
web UI all call them. Each change is one transaction; a bad value raises
InvalidInput / NotFound / Conflict and changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from appliance.config.macs import normalize_mac
from appliance.domain import bmc, events
from appliance.domain.dropped import drop_for_gc
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.state.db import now, transaction

MODES = ("netboot", "install", "local", "cached")
SOURCES = ("manual", "flake", "adopted")  # who made the host: the admin, its flake, adoption
STATES = ("unknown", "booting", "booted", "installing", "installed", "failed")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"{name!r} is not a valid host name (lower-case letters, digits and '-', "
            "at most 63, not starting or ending with '-')",
            field="name",
        )
    return name


def validate_mode(mode: object) -> str:
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
    return mode  # type: ignore[return-value]


def default_attr(name: str) -> str:
    return f"nixosConfigurations.{name}"


def _validate_flake(flake: object) -> str:
    if not isinstance(flake, str) or not flake.strip():
        raise InvalidInput("a flake reference is required", field="flake")
    if any(c.isspace() for c in flake):
        raise InvalidInput(f"{flake!r} contains white space", field="flake")
    if flake.strip().startswith("-"):  # `nix` would read it as an option
        raise InvalidInput(f"{flake.strip()[:80]!r} is not a flake reference: it must not "
                           "start with '-'", field="flake")
    return flake.strip()


def _validate_attr(attr: object) -> str:
    if not isinstance(attr, str) or not re.match(r"^[A-Za-z0-9_'\-\"]+(\.[A-Za-z0-9_'\-\"]+)*$", attr):
        raise InvalidInput(f"{attr!r} is not a flake attribute path", field="attr")
    return attr


def validate_reservation(ip: object, network: str | None = None) -> str | None:
    """An IPv4 address for a MAC reservation ('' or None clears it); inside
    `network` (the LAN, e.g. 10.0.0.0/24) when given."""
    return _reserved_address(ip, network, 4)


def validate_reservation6(ip6: object, network6: str | None = None) -> str | None:
    """An IPv6 address for the host's DHCPv6 reservation ('' or None clears it), in
    compressed form; inside `network6` (the LAN prefix, e.g. fd00:1::/64) when given."""
    return _reserved_address(ip6, network6, 6)


def _reserved_address(ip: object, network: str | None, family: int) -> str | None:
    if ip is None or ip == "":
        return None
    field, what = ("ip", "IPv4 address") if family == 4 else ("ip6", "IPv6 address")
    try:
        addr = ipaddress.ip_address(ip)
        if addr.version != family:
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidInput(f"{ip!r} is not an {what}", field=field) from None
    if network is not None:
        net = ipaddress.ip_network(network, strict=False)
        if addr not in net or addr == net.network_address or (
                family == 4 and addr == net.broadcast_address):
            where = "network" if family == 4 else "prefix"
            raise InvalidInput(f"{addr} is not a host address of the LAN {where} {net}",
                               field=field)
    return str(addr)


def _check_reservation_free(conn: sqlite3.Connection, ip: str | None, host_id: int | None,
                            column: str = "ip_reservation") -> None:
    if ip is None:
        return
    r = conn.execute(f"SELECT id, name FROM hosts WHERE {column} = ?", (ip,)).fetchone()
    if r and r["id"] != host_id:
        raise Conflict(f"address {ip} is already reserved for host {r['name']}")


def _macs_of(conn: sqlite3.Connection, host_id: int) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT mac FROM host_macs WHERE host_id = ? ORDER BY rowid", (host_id,))]


def _row_to_host(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    h = dict(row)
    h["macs"] = _macs_of(conn, h["id"])
    return h


def _check_macs_free(conn: sqlite3.Connection, macs: list[str], host_id: int | None) -> None:
    for mac in macs:
        r = conn.execute(
            "SELECT h.name, h.id FROM host_macs m JOIN hosts h ON h.id = m.host_id WHERE m.mac = ?",
            (mac,)).fetchone()
        if r and r["id"] != host_id:
            raise Conflict(f"MAC {mac} already belongs to host {r['name']}")


def _normalize_macs(macs: list[str] | str) -> list[str]:
    if isinstance(macs, str):
        macs = [macs]
    if not macs:
        raise InvalidInput("a host needs at least one MAC address", field="mac")
    out: list[str] = []
    for m in macs:
        n = normalize_mac(m)
        if n not in out:
            out.append(n)
    return out


def add_host(conn: sqlite3.Connection, name: str, macs: list[str] | str, flake: str,
             attr: str | None = None, mode: str = "netboot", ip: str | None = None,
             network: str | None = None, source: str = "manual", ip6: str | None = None,
             network6: str | None = None) -> dict[str, Any]:
    """`ip`/`ip6`: the host's DHCPv4/DHCPv6 reservation, inside `network`/`network6`."""
    name = validate_name(name)
    if source not in SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(SOURCES)}", field="source")
    ip = validate_reservation(ip, network)
    ip6 = validate_reservation6(ip6, network6)
    mac_list = _normalize_macs(macs)
    flake = _validate_flake(flake)
    attr = _validate_attr(attr or default_attr(name))
    mode = validate_mode(mode)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM hosts WHERE name = ?", (name,)).fetchone():
            raise Conflict(f"host {name} already exists")
        _check_macs_free(conn, mac_list, None)
        _check_reservation_free(conn, ip, None)
        _check_reservation_free(conn, ip6, None, "ip6_reservation")
        t = now()
        host_id = conn.execute(
            "INSERT INTO hosts (name, flake, attr, mode, state, created_at, updated_at, ip_reservation, "
            "source, ip6_reservation) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (name, flake, attr, mode, "unknown", t, t, ip, source, ip6)).lastrowid
        conn.executemany("INSERT INTO host_macs (mac, host_id) VALUES (?, ?)",
                         [(m, host_id) for m in mac_list])
        how = {"manual": "", "flake": " from its flake", "adopted": " (adopted)"}[source]
        events.record(conn, "host.added", f"host {name} added{how} ({', '.join(mac_list)})",
                      host_id=host_id, data={"source": source} if source != "manual" else None)
    return get_host(conn, name)


def update_host(conn: sqlite3.Connection, name: str, *, macs: list[str] | None = None,
                flake: str | None = None, attr: str | None = None,
                mode: str | None = None, ip: str | None = None,
                network: str | None = None, ip6: str | None = None,
                network6: str | None = None) -> dict[str, Any]:
    """`ip`, `ip6`: a reservation to set, or "" to clear it; None leaves it."""
    changes: dict[str, Any] = {}
    if ip is not None:
        changes["ip_reservation"] = validate_reservation(ip, network)
    if ip6 is not None:
        changes["ip6_reservation"] = validate_reservation6(ip6, network6)
    if flake is not None:
        changes["flake"] = _validate_flake(flake)
    if attr is not None:
        changes["attr"] = _validate_attr(attr)
    if mode is not None:
        changes["mode"] = validate_mode(mode)
    mac_list = _normalize_macs(macs) if macs is not None else None
    with transaction(conn):
        host = _get_row(conn, name)
        if "ip_reservation" in changes:
            _check_reservation_free(conn, changes["ip_reservation"], host["id"])
        if "ip6_reservation" in changes:
            _check_reservation_free(conn, changes["ip6_reservation"], host["id"],
                                    "ip6_reservation")
        if mac_list is not None:
            _check_macs_free(conn, mac_list, host["id"])
            conn.execute("DELETE FROM host_macs WHERE host_id = ?", (host["id"],))
            conn.executemany("INSERT INTO host_macs (mac, host_id) VALUES (?, ?)",
                             [(m, host["id"]) for m in mac_list])
        if changes:
            sets = ", ".join(f"{k} = ?" for k in changes)
            conn.execute(f"UPDATE hosts SET {sets}, updated_at = ? WHERE id = ?",
                         (*changes.values(), now(), host["id"]))
        if changes or mac_list is not None:
            desc = ", ".join(f"{k}={v}" for k, v in changes.items())
            if mac_list is not None:
                desc = ", ".join(filter(None, [desc, "macs=" + " ".join(mac_list)]))
            events.record(conn, "host.updated", f"host {name} updated: {desc}", host_id=host["id"])
    return get_host(conn, name)


def _get_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no host named {name!r}")
    return row


def get_host(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """The host, with `ip6_addresses`: the IPv6 addresses DHCPv6 has bound to its MACs
    now (newest first)."""
    h = _row_to_host(conn, _get_row(conn, name))
    h["ip6_addresses"] = addresses6(conn, h["id"])
    return h


def addresses6(conn: sqlite3.Connection, host_id: int) -> list[str]:
    """The active DHCPv6 bindings of the host's MACs, newest expiry first."""
    return [r[0] for r in conn.execute(
        "SELECT address FROM leases6 WHERE host_id = ? AND state = 'bound' "
        "AND expires > ? ORDER BY expires DESC", (host_id, now()))]


def get_host_by_id(conn: sqlite3.Connection, host_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM hosts WHERE id = ?", (host_id,)).fetchone()
    return _row_to_host(conn, row) if row else None


def find_by_mac(conn: sqlite3.Connection, mac: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT h.* FROM host_macs m JOIN hosts h ON h.id = m.host_id WHERE m.mac = ?",
        (normalize_mac(mac),)).fetchone()
    return _row_to_host(conn, row) if row else None


def list_hosts(conn: sqlite3.Connection, *, search: str | None = None, limit: int | None = None,
               offset: int = 0) -> list[dict[str, Any]]:
    sql = "SELECT * FROM hosts"
    args: list[Any] = []
    if search:
        sql += (" WHERE name LIKE ? OR id IN (SELECT host_id FROM host_macs WHERE mac LIKE ?)"
                " OR ip LIKE ?")
        pat = f"%{search.lower()}%"
        args += [pat, pat, pat]
    sql += " ORDER BY name"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    rows = conn.execute(sql, args).fetchall()
    macs: dict[int, list[str]] = {}
    ids = [r["id"] for r in rows]
    if ids:
        q = ",".join("?" * len(ids))
        for m in conn.execute(f"SELECT mac, host_id FROM host_macs WHERE host_id IN ({q}) ORDER BY rowid", ids):
            macs.setdefault(m["host_id"], []).append(m["mac"])
    return [dict(r) | {"macs": macs.get(r["id"], [])} for r in rows]


def count_hosts(conn: sqlite3.Connection, *, search: str | None = None) -> int:
    if search:
        pat = f"%{search.lower()}%"
        return conn.execute(
            "SELECT count(*) FROM hosts WHERE name LIKE ? OR id IN "
            "(SELECT host_id FROM host_macs WHERE mac LIKE ?) OR ip LIKE ?", (pat, pat, pat)
        ).fetchone()[0]
    return conn.execute("SELECT count(*) FROM hosts").fetchone()[0]


def remove_host(conn: sqlite3.Connection, name: str) -> None:
    with transaction(conn):
        host = _get_row(conn, name)
        for (top,) in conn.execute("SELECT toplevel FROM generations WHERE host_id = ?",
                                   (host["id"],)).fetchall():
            drop_for_gc(conn, top)
        conn.execute("DELETE FROM hosts WHERE id = ?", (host["id"],))
        events.record(conn, "host.removed", f"host {name} removed")
    bmc.remove_orphan_secrets(conn)  # its BMC row went with it (ON DELETE CASCADE)


def split_family(ip: str | None) -> tuple[str | None, str | None]:
    """(IPv4, IPv6) of an address a host was seen at: a host keeps one of each
    (`ip`, `ip6`); an IPv4-mapped IPv6 address is the IPv4 one."""
    if not ip:
        return None, None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None, None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is None:
            return None, str(addr)
        return str(addr.ipv4_mapped), None
    return str(addr), None


def set_state(conn: sqlite3.Connection, host_id: int, state: str, *, ip: str | None = None,
              message: str = "") -> None:
    """Move a host to `state` (and record where it was seen), with an event."""
    if state not in STATES:
        raise InvalidInput(f"unknown host state {state!r}", field="state")
    t = now()
    ip4, ip6 = split_family(ip)
    conn.execute(
        "UPDATE hosts SET state = ?, state_changed_at = ?, last_seen = ?, ip = coalesce(?, ip), "
        "ip6 = coalesce(?, ip6), updated_at = ? WHERE id = ?", (state, t, t, ip4, ip6, t, host_id))
    events.record(conn, f"host.{state}", message or f"host is {state}", host_id=host_id, ip=ip)


# ---------------------------------------------------------------- hosts.json

def _parse_entry(name: str, entry: Any, default_flake: str | None) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise InvalidInput(f"hosts.json: entry {name!r} must be an object")
    known = {"mac_address", "macs", "flake", "attr", "mode", "bmc"}
    unknown = set(entry) - known
    if unknown:
        raise InvalidInput(f"hosts.json: {name}: unknown key {sorted(unknown)[0]!r}")
    macs: list[str] = []
    if "mac_address" in entry:
        macs.append(entry["mac_address"])
    macs += entry.get("macs") or []
    if not macs:
        raise InvalidInput(f"hosts.json: {name}: no mac_address")
    flake = entry.get("flake") or default_flake
    if not flake:
        raise InvalidInput(f"hosts.json: {name}: no flake (give one with --flake)")
    try:
        if "bmc" in entry and not isinstance(entry["bmc"], dict):
            raise InvalidInput("bmc must be an object", field="bmc")
        return {
            "name": validate_name(name),
            "macs": _normalize_macs(macs),
            "flake": _validate_flake(flake),
            "attr": _validate_attr(entry.get("attr") or default_attr(name)),
            "mode": validate_mode(entry.get("mode", "netboot")),
            "bmc": bmc.parse_input(entry["bmc"]) if "bmc" in entry else None,
        }
    except InvalidInput as e:
        raise InvalidInput(f"hosts.json: {name}: {e}", field=e.field) from None


def parse_hosts_json(text: str, default_flake: str | None = None) -> list[dict[str, Any]]:
    """Nixie's form `{"name": {"mac_address": "..."}}`, or ours, which adds
    `macs`, `flake`, `attr` and `mode` to each entry (optionally under "hosts")."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"hosts.json is not valid JSON: {e.msg} at line {e.lineno}") from None
    except RecursionError:
        raise InvalidInput("hosts.json is nested too deeply to be a hosts file (an entry is an "
                           "object of strings and lists of strings)") from None
    if isinstance(data, dict) and set(data) == {"hosts"} and isinstance(data["hosts"], dict):
        data = data["hosts"]
    if not isinstance(data, dict):
        raise InvalidInput("hosts.json must be an object of host name -> entry")
    entries = [_parse_entry(n, e, default_flake) for n, e in data.items()]
    seen: dict[str, str] = {}
    for e in entries:
        for m in e["macs"]:
            if m in seen:
                raise InvalidInput(f"hosts.json: MAC {m} is listed for both {seen[m]} and {e['name']}")
            seen[m] = e["name"]
    return entries


def import_hosts(conn: sqlite3.Connection, text: str, *, default_flake: str | None = None,
                 replace: bool = False) -> dict[str, list[str]]:
    """Add (or with replace=True, update) every host in a hosts.json, all or nothing.
    An entry's `bmc` object sets the host's BMC (its password is stored as a secret file)."""
    entries = parse_hosts_json(text, default_flake)
    added, updated = [], []
    secrets_dir = bmc.secrets_dir(conn) if any(e["bmc"] for e in entries) else Path()
    new_refs: list[str | None] = []
    replaced: list[str | None] = []
    try:
        with transaction(conn):
            _import_entries(conn, entries, replace, added, updated, secrets_dir, new_refs,
                            replaced)
    except BaseException:
        for ref in new_refs:
            if ref:
                (secrets_dir / ref).unlink(missing_ok=True)
        raise
    for ref in replaced:
        if ref:
            (secrets_dir / ref).unlink(missing_ok=True)
    return {"added": added, "updated": updated}


def _import_entries(conn: sqlite3.Connection, entries: list[dict[str, Any]], replace: bool,
                    added: list[str], updated: list[str], secrets_dir: Path,
                    new_refs: list[str | None], replaced: list[str | None]) -> None:
    for e in entries:
        row = conn.execute("SELECT id FROM hosts WHERE name = ?", (e["name"],)).fetchone()
        if row and not replace:
            raise Conflict(f"host {e['name']} already exists (use --replace to update it)")
        host_id = row["id"] if row else None
        _check_macs_free(conn, e["macs"], host_id)
        t = now()
        if host_id is None:
            host_id = conn.execute(
                "INSERT INTO hosts (name, flake, attr, mode, state, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (e["name"], e["flake"], e["attr"], e["mode"], "unknown", t, t)).lastrowid
            added.append(e["name"])
        else:
            conn.execute("UPDATE hosts SET flake=?, attr=?, mode=?, updated_at=? WHERE id=?",
                         (e["flake"], e["attr"], e["mode"], t, host_id))
            conn.execute("DELETE FROM host_macs WHERE host_id = ?", (host_id,))
            updated.append(e["name"])
        conn.executemany("INSERT INTO host_macs (mac, host_id) VALUES (?, ?)",
                         [(m, host_id) for m in e["macs"]])
        if e["bmc"] is not None:
            new_ref, old_ref = bmc.upsert_in(conn, host_id, e["name"], e["bmc"], secrets_dir)
            new_refs.append(new_ref)
            replaced.append(old_ref)
    events.record(conn, "hosts.imported",
                  f"hosts.json imported: {len(added)} added, {len(updated)} updated")


def export_hosts(conn: sqlite3.Connection, *, with_secrets: bool = False) -> str:
    """hosts.json in our form, which Nixie reads too (mac_address is the first MAC). A host's
    BMC is exported without its password unless `with_secrets`."""
    out: dict[str, Any] = {}
    for h in list_hosts(conn):
        out[h["name"]] = {
            "mac_address": h["macs"][0],
            "macs": h["macs"],
            "flake": h["flake"],
            "attr": h["attr"],
            "mode": h["mode"],
        }
        b = bmc.export_entry(conn, h["id"], with_secrets=with_secrets)
        if b is not None:
            out[h["name"]]["bmc"] = b
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


def list_host_names(conn: sqlite3.Connection, *, limit: int = 1000) -> list[str]:
    """Just the names, sorted (for pickers)."""
    return [r[0] for r in conn.execute("SELECT name FROM hosts ORDER BY name LIMIT ?", (limit,))]
