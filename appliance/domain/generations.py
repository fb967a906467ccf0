"""A host's generations (one per successful build) and which one it boots."""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.domain import events
from appliance.domain.hosts import get_host
from appliance.errors import InvalidInput, NotFound
from appliance.state.db import now, transaction


def list_generations(conn: sqlite3.Connection, host_name: str) -> list[dict[str, Any]]:
    host = get_host(conn, host_name)
    return [dict(r) | {"current": r["number"] == host["current_generation"]} for r in conn.execute(
        "SELECT number, build_id, toplevel, created_at FROM generations WHERE host_id = ? "
        "ORDER BY number DESC", (host["id"],))]


def set_current_generation(conn: sqlite3.Connection, host_name: str, number: int) -> dict[str, Any]:
    """Make generation `number` the one the host boots by default (rollback or roll forward)."""
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise InvalidInput(f"{number!r} is not a generation number", field="number")
    with transaction(conn):
        host = get_host(conn, host_name)
        row = conn.execute("SELECT toplevel FROM generations WHERE host_id = ? AND number = ?",
                           (host["id"], number)).fetchone()
        if row is None:
            raise NotFound(f"host {host_name} has no generation {number}")
        previous = host["current_generation"]
        conn.execute("UPDATE hosts SET current_generation = ?, updated_at = ? WHERE id = ?",
                     (number, now(), host["id"]))
        events.record(conn, "host.generation",
                      f"host {host_name} now boots generation {number} (was {previous or '-'})",
                      host_id=host["id"], data={"from": previous, "to": number})
    return get_host(conn, host_name)


def rollback(conn: sqlite3.Connection, host_name: str, to: int | None = None) -> dict[str, Any]:
    """Boot generation `to`, or without it the newest one older than the current:
    `nixie host rollback NAME [--to N]`. Newer generations stay listed and bootable."""
    if to is None:
        host = get_host(conn, host_name)
        current = host["current_generation"]
        row = conn.execute(
            "SELECT max(number) FROM generations WHERE host_id = ? AND number < ?",
            (host["id"], current if current is not None else 1 << 62)).fetchone()
        if row[0] is None:
            raise NotFound(f"host {host_name} has no generation older than "
                           f"{current if current is not None else 'none'}")
        to = row[0]
    return set_current_generation(conn, host_name, to)
