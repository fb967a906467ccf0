"""The event log: every lease change, boot step, build and state change."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from appliance.errors import InvalidInput
from appliance.state.db import now


def record(conn: sqlite3.Connection, kind: str, message: str = "", *, level: str = "info",
           host_id: int | None = None, mac: str | None = None, ip: str | None = None,
           data: dict[str, Any] | None = None) -> int:
    cur = conn.execute(
        "INSERT INTO events (ts, kind, level, message, host_id, mac, ip, data) VALUES (?,?,?,?,?,?,?,?)",
        (now(), kind, level, message, host_id, mac, ip, json.dumps(data) if data else None),
    )
    return cur.lastrowid


def _filters(host_id: int | None, kind: str | None, before_id: int | None,
             like_prefix: Callable[[str], str] = str) -> tuple[list[str], list[Any]]:
    """WHERE conditions and their arguments: a host, a kind (exact, or `prefix*`, the
    prefix passed through `like_prefix`), ids below `before_id`."""
    where: list[str] = []
    args: list[Any] = []
    if host_id is not None:
        where.append("e.host_id = ?")
        args.append(host_id)
    if kind:
        if kind.endswith("*"):
            where.append("e.kind LIKE ?")
            args.append(like_prefix(kind[:-1]) + "%")
        else:
            where.append("e.kind = ?")
            args.append(kind)
    if before_id is not None:
        where.append("e.id < ?")
        args.append(before_id)
    return where, args


def _newest_first(conn: sqlite3.Connection, where: list[str], args: list[Any], limit: int
                  ) -> list[dict[str, Any]]:
    """The events matching all of `where`, newest first, with their host's name and data decoded."""
    sql = ("SELECT e.*, h.name AS host FROM events e LEFT JOIN hosts h ON h.id = e.host_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.id DESC LIMIT ?")
    out = []
    for r in conn.execute(sql, (*args, limit)).fetchall():
        d = dict(r)
        d["data"] = json.loads(d["data"]) if d["data"] else None
        out.append(d)
    return out


def recent(conn: sqlite3.Connection, *, limit: int = 100, host_id: int | None = None,
           kind: str | None = None, before_id: int | None = None) -> list[dict[str, Any]]:
    where, args = _filters(host_id, kind, before_id)
    return _newest_first(conn, where, args, limit)


LEVELS = ("debug", "info", "warning", "error")


def search(conn: sqlite3.Connection, *, kind: str | None = None, host_id: int | None = None,
           level: str | None = None, before_id: int | None = None,
           limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, filtered; page on with `before_id` = the last id seen.
    `kind` is exact or a `prefix*`; `level` keeps that level and above."""
    where, args = [], []
    if level:
        if level not in LEVELS:
            raise InvalidInput(f"level must be one of {', '.join(LEVELS)}", field="level")
        wanted = LEVELS[LEVELS.index(level):]
        where.append(f"e.level IN ({','.join('?' * len(wanted))})")
        args += wanted
    more, more_args = _filters(host_id, kind, before_id,
                               like_prefix=lambda p: p.replace("%", "").replace("_", ""))
    return _newest_first(conn, where + more, args + more_args, max(1, min(int(limit), 500)))
