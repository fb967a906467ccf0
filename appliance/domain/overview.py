"""The numbers and short lists the dashboard and `GET /api/v1/status` show."""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.domain import events
from appliance.state.db import now

BOOT_KINDS = ("host.booting", "host.booted", "host.installing", "host.installed", "host.failed")


def counters(conn: sqlite3.Connection) -> dict[str, Any]:
    by_state = {r[0]: r[1] for r in conn.execute("SELECT state, count(*) FROM hosts GROUP BY state")}
    builds = {r[0]: r[1] for r in conn.execute(
        "SELECT status, count(*) FROM builds WHERE status IN ('queued', 'running') GROUP BY status")}
    return {
        "hosts": sum(by_state.values()),
        "hosts_by_state": by_state,
        "flakes": conn.execute("SELECT count(*) FROM flakes").fetchone()[0],
        "leases_active": conn.execute(
            "SELECT count(*) FROM leases WHERE state = 'bound' AND expires > ?", (now(),)).fetchone()[0],
        "builds_queued": builds.get("queued", 0),
        "builds_running": builds.get("running", 0),
        "events_last_hour": conn.execute(
            "SELECT count(*) FROM events WHERE ts > ?", (now() - 3600,)).fetchone()[0],
    }


def recent_boots(conn: sqlite3.Connection, limit: int = 10) -> list[dict[str, Any]]:
    q = ",".join("?" * len(BOOT_KINDS))
    rows = conn.execute(
        f"SELECT e.id, e.ts, e.kind, e.message, e.ip, h.name AS host FROM events e "
        f"LEFT JOIN hosts h ON h.id = e.host_id WHERE e.kind IN ({q}) ORDER BY e.ts DESC LIMIT ?",
        (*BOOT_KINDS, limit))
    return [dict(r) for r in rows]


def build_queue(conn: sqlite3.Connection, limit: int = 10) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT id, host_name, status, progress, queued_at, started_at, finished_at FROM builds "
        "WHERE status IN ('queued', 'running') ORDER BY queued_at LIMIT ?", (limit,))]


def active_hosts(conn: sqlite3.Connection, limit: int = 24) -> list[dict[str, Any]]:
    """Hosts most recently changed state (what an admin looks at first)."""
    return [dict(r) for r in conn.execute(
        "SELECT id, name, state, ip, mode, current_generation, state_changed_at FROM hosts "
        "ORDER BY coalesce(state_changed_at, 0) DESC, name LIMIT ?", (limit,))]


def recent_events(conn: sqlite3.Connection, limit: int = 8) -> list[dict[str, Any]]:
    return events.recent(conn, limit=limit)


def builds_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Every build in the DB by status (queued, running, succeeded, failed, cancelled)."""
    return {r[0]: r[1] for r in conn.execute("SELECT status, count(*) FROM builds GROUP BY status")}


def build_durations(conn: sqlite3.Connection, limit: int | None = None) -> list[dict[str, Any]]:
    """Finished builds that ran (id, host, status, started, seconds), oldest first; with
    `limit`, the newest `limit` of them."""
    sql = ("SELECT id, host_name, status, started_at, finished_at - started_at AS seconds "
           "FROM builds WHERE status IN ('succeeded', 'failed') AND started_at IS NOT NULL "
           "AND finished_at IS NOT NULL ORDER BY id DESC")
    rows = conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
    return [dict(r) for r in reversed(rows)]


def events_by_kind(conn: sqlite3.Connection, kinds: tuple[str, ...]) -> dict[str, int]:
    """How many events of each of `kinds` the log holds."""
    q = ",".join("?" * len(kinds))
    return {r[0]: r[1] for r in conn.execute(
        f"SELECT kind, count(*) FROM events WHERE kind IN ({q}) GROUP BY kind", kinds)}

