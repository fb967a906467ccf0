"""The build queue: rows in `builds`, taken by the build worker in `serve`."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from appliance.domain import events
from appliance.domain.hosts import get_host
from appliance.errors import NotFound
from appliance.state.db import now, transaction

FINAL = ("succeeded", "failed", "cancelled")


def enqueue(conn: sqlite3.Connection, host_name: str) -> dict[str, Any]:
    host = get_host(conn, host_name)
    with transaction(conn):
        build_id = conn.execute(
            "INSERT INTO builds (host_id, host_name, flake, attr, status, queued_at) "
            "VALUES (?,?,?,?,?,?)",
            (host["id"], host["name"], host["flake"], host["attr"], "queued", now())).lastrowid
        events.record(conn, "build.queued", f"build {build_id} of {host['name']} queued",
                      host_id=host["id"], data={"build": build_id})
    return get_build(conn, build_id)


def get_build(conn: sqlite3.Connection, build_id: int) -> dict[str, Any]:
    r = conn.execute("SELECT * FROM builds WHERE id = ?", (build_id,)).fetchone()
    if r is None:
        raise NotFound(f"no build {build_id}")
    return dict(r)


def list_builds(conn: sqlite3.Connection, *, host_name: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    if host_name:
        rows = conn.execute("SELECT * FROM builds WHERE host_name = ? ORDER BY id DESC LIMIT ?",
                            (host_name, limit))
    else:
        rows = conn.execute("SELECT * FROM builds ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(r) for r in rows]


def wait(conn: sqlite3.Connection, build_id: int, timeout: float | None = None,
         poll: float = 0.2) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        b = get_build(conn, build_id)
        if b["status"] in FINAL:
            return b
        if deadline is not None and time.monotonic() > deadline:
            return b
        time.sleep(poll)
