"""The build queue: rows in `builds`, taken by the build worker in `serve`."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

from appliance.domain import events
from appliance.domain.hosts import get_host
from appliance.errors import Conflict, NixieError, NotFound
from appliance.state import kv
from appliance.state.db import now, transaction
from appliance.state.status import STALE_SECONDS, running_status

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
                limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
    """Builds newest first (of one host; older than build `before_id`)."""
    where, params = [], []
    if host_name:
        where.append("host_name = ?")
        params.append(host_name)
    if before_id:
        where.append("id < ?")
        params.append(before_id)
    sql = ("SELECT * FROM builds" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY id DESC LIMIT ?")
    return [dict(r) for r in conn.execute(sql, (*params, limit))]


def cancel(conn: sqlite3.Connection, build_id: int) -> dict[str, Any]:
    """Cancel a queued or running build: it becomes `cancelled` at once (a running one's
    nix is stopped by the build worker within a second, and its result is dropped).
    A finished build is a Conflict."""
    with transaction(conn):
        b = get_build(conn, build_id)
        if b["status"] in FINAL:
            raise Conflict(f"build {build_id} already {b['status']}")
        conn.execute("UPDATE builds SET status = 'cancelled', finished_at = ?, "
                     "error = 'cancelled by an admin' WHERE id = ?", (now(), build_id))
        kv.delete(conn, f"{REBOOT_AFTER}{build_id}")
        events.record(conn, "build.cancelled", f"build {build_id} of {b['host_name']} cancelled",
                      host_id=b["host_id"], data={"build": build_id, "was": b["status"]})
    return get_build(conn, build_id)


LOG_CHUNK = 256 * 1024


def read_log(build: dict[str, Any], offset: int = 0, limit: int = LOG_CHUNK
             ) -> tuple[str, int, bool]:
    """The build's log from byte `offset` on (at most `limit` bytes, cut at a whole UTF-8
    character): (text, the offset to read on from, whether more is there already). An
    offset past the end (the log was restarted) reads from the start."""
    path = build.get("log_path")
    if not path:
        return "", offset, False
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                offset = 0
            f.seek(offset)
            chunk = whole_utf8(f.read(limit))
    except FileNotFoundError:
        return "", offset, False
    return chunk.decode("utf-8", "replace"), offset + len(chunk), offset + len(chunk) < size


def log_tail(build: dict[str, Any], lines: int, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of the build's log, read from its end (at most `max_bytes`,
    however long the log is)."""
    path = build.get("log_path")
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - max_bytes)
            f.seek(start)
            chunk = f.read(max_bytes)
    except FileNotFoundError:
        return []
    text = chunk.decode("utf-8", "replace").splitlines()
    if start > 0 and text:
        text = text[1:]  # the first line was cut
    return text[-lines:]


def whole_utf8(chunk: bytes) -> bytes:
    """Drop a UTF-8 sequence cut at the end of `chunk` (the next read takes it whole)."""
    for back in range(1, min(4, len(chunk)) + 1):
        b = chunk[-back]
        if b & 0xC0 == 0x80:
            continue
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return chunk if need <= back else chunk[:-back]
        return chunk
    return chunk


def progress_dict(progress: Any) -> dict[str, Any]:
    """A build's progress column (JSON text) as a dict; {} when there is none."""
    if isinstance(progress, str):
        try:
            progress = json.loads(progress)
        except ValueError:
            return {}
    return progress if isinstance(progress, dict) else {}


class ServeNotRunning(NixieError):
    """No `nixie serve` heartbeat: nothing takes queued builds."""

    http_status = 503
    code = "serve_not_running"


def require_serve(conn: sqlite3.Connection, stale_seconds: float = STALE_SECONDS) -> None:
    """Raise ServeNotRunning unless serve's heartbeat is fresh."""
    if running_status(conn, stale_seconds) is None:
        raise ServeNotRunning(
            f"nixie serve is not running (no heartbeat in the last {stale_seconds:.0f} s): "
            "nothing would take the build. Start `nixie serve`, or build in this process "
            "with `nixie build HOST --here`.")


def follow(conn: sqlite3.Connection, build_id: int, *, timeout: float | None = None,
           poll: float = 0.3, serve_check: Callable[[], None] | None = None
           ) -> Iterator[tuple[str, Any]]:
    """Follow a build as it runs: yields ("status", build) when its status changes,
    ("progress", progress dict) when the worker's counts change, ("log", line) for each
    new line of its log, and last ("final", build) when it is finished, or ("timeout",
    build) after `timeout` s. `serve_check` is called every poll (it raises when serve
    stopped: `require_serve`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    status = progress = None
    offset, partial = 0, ""
    while True:
        b = get_build(conn, build_id)
        if b["status"] != status:
            status = b["status"]
            yield "status", b
        if b["progress"] and b["progress"] != progress:
            progress = b["progress"]
            yield "progress", progress_dict(progress)
        more = True
        while more:
            text, offset, more = read_log(b, offset)
            lines = (partial + text).split("\n")
            partial = lines.pop()
            for line in lines:
                yield "log", line
        if b["status"] in FINAL:
            if partial:
                yield "log", partial
            yield "final", b
            return
        if deadline is not None and time.monotonic() > deadline:
            yield "timeout", b
            return
        if serve_check is not None:
            serve_check()
        time.sleep(poll)


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
