"""The systems of generations the router dropped (beyond `builder.keep_generations`, or
with their host): table `gc_dropped` (migration 37). `appliance.nix.gc.collect` deletes
their store paths once nothing else keeps them, and forgets them."""

from __future__ import annotations

import sqlite3

from appliance.state.db import now


def drop_for_gc(conn: sqlite3.Connection, toplevel: str | None) -> None:
    """Remember `toplevel` for the next garbage collection (inside the caller's transaction)."""
    if toplevel:
        conn.execute("INSERT INTO gc_dropped (toplevel, dropped_at) VALUES (?, ?) "
                     "ON CONFLICT(toplevel) DO NOTHING", (toplevel, now()))


def dropped(conn: sqlite3.Connection) -> list[str]:
    """The dropped systems no kept generation uses (another host may run the same one)."""
    return [r[0] for r in conn.execute(
        "SELECT toplevel FROM gc_dropped WHERE toplevel NOT IN "
        "(SELECT toplevel FROM generations WHERE toplevel IS NOT NULL) ORDER BY dropped_at")]


def forget(conn: sqlite3.Connection, toplevels: list[str]) -> None:
    conn.executemany("DELETE FROM gc_dropped WHERE toplevel = ?", [(t,) for t in toplevels])
