"""The build queue: rows in `builds`, taken by the build worker in `serve`."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from appliance.domain import events
from appliance.domain.hosts import get_host
from appliance.errors import NotFound
from appliance.state import kv
from appliance.state.db import now, transaction

FINAL = ("succeeded", "failed", "cancelled")
REBOOT_AFTER = "build.reboot_after."  # settings key prefix: build id -> host name


def enqueue(conn: sqlite3.Connection, host_name: str, *, reboot_after: bool = False
            ) -> dict[str, Any]:
    """Queue a build of the host. `reboot_after`: when it succeeds, the runtime boots the
    host from the network (appliance.router.bmc.flows); a failed build boots nothing."""
    host = get_host(conn, host_name)
    with transaction(conn):
        build_id = conn.execute(
            "INSERT INTO builds (host_id, host_name, flake, attr, status, queued_at) "
            "VALUES (?,?,?,?,?,?)",
            (host["id"], host["name"], host["flake"], host["attr"], "queued", now())).lastrowid
        if reboot_after:
            kv.put(conn, f"{REBOOT_AFTER}{build_id}", host["name"])
        then = ", then reboot" if reboot_after else ""
        events.record(conn, "build.queued", f"build {build_id} of {host['name']} queued{then}",
                      host_id=host["id"],
                      data={"build": build_id, **({"reboot_after": True} if reboot_after else {})})
    return get_build(conn, build_id)


def reboot_after(conn: sqlite3.Connection, build_id: int) -> bool:
    """Whether build `build_id` still waits to reboot its host when it succeeds."""
    return kv.get(conn, f"{REBOOT_AFTER}{build_id}") is not None


def take_finished_reboots(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The builds queued with reboot-after that have finished, each taken (its mark
    removed) in one transaction: a build is handed out once. A build whose row is gone
    is dropped."""
    out = []
    with transaction(conn):
        for key in kv.with_prefix(conn, REBOOT_AFTER):
            row = conn.execute("SELECT * FROM builds WHERE id = ?", (int(key),)).fetchone()
            if row is not None and row["status"] not in FINAL:
                continue
            kv.delete(conn, f"{REBOOT_AFTER}{key}")
            if row is not None:
                out.append(dict(row))
    return out


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
