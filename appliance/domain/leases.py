"""Reading DHCP leases (the DHCP server writes them through its lease store)."""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.state.db import now


def list_leases(conn: sqlite3.Connection, *, include_expired: bool = False,
                limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    sql = ("SELECT l.*, h.name AS host FROM leases l "
           "LEFT JOIN host_macs m ON m.mac = l.mac LEFT JOIN hosts h ON h.id = m.host_id")
    args: list[Any] = []
    if not include_expired:
        sql += " WHERE l.state = 'bound' AND l.expires > ?"
        args.append(now())
    sql += " ORDER BY l.expires DESC"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    out = []
    t = now()
    for r in conn.execute(sql, args):
        d = dict(r)
        if d["state"] == "bound" and d["expires"] <= t:
            d["state"] = "expired"
        out.append(d)
    return out


def count_leases(conn: sqlite3.Connection, *, include_expired: bool = False) -> int:
    if include_expired:
        return conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    return conn.execute("SELECT count(*) FROM leases WHERE state = 'bound' AND expires > ?",
                        (now(),)).fetchone()[0]


def list_leases6(conn: sqlite3.Connection, *, include_expired: bool = False,
                 limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """DHCPv6 bindings (table leases6), shaped like `list_leases` rows: `ip` is the
    IPv6 address, plus `duid`, `iaid` and `family` 6."""
    sql = ("SELECT l.address AS ip, l.mac, l.duid, l.iaid, l.hostname, l.state, l.starts, "
           "l.expires, l.updated_at, h.name AS host FROM leases6 l "
           "LEFT JOIN host_macs m ON m.mac = l.mac LEFT JOIN hosts h ON h.id = m.host_id")
    args: list[Any] = []
    if not include_expired:
        sql += " WHERE l.state = 'bound' AND l.expires > ?"
        args.append(now())
    sql += " ORDER BY l.expires DESC"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    t = now()
    out = []
    for r in conn.execute(sql, args):
        d = {**dict(r), "family": 6}
        if d["state"] == "bound" and d["expires"] <= t:
            d["state"] = "expired"
        out.append(d)
    return out
