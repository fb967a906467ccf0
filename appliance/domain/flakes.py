"""Flake URLs the router builds hosts from.

Adding, listing and the evaluation queue are here; evaluating a flake's
nixosConfigurations with the real `nix` CLI lives in `appliance.nix.flake_eval`.
An added flake, or one whose refresh is asked for, is `queued`; the evaluator
claims it (`evaluating`) and leaves it `idle` with its listing or error.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance.domain import events
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.state.db import now, transaction


def validate_url(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("a flake URL is required", field="url")
    url = url.strip()
    if any(c.isspace() for c in url) or len(url) > 2048:
        shown = url if len(url) <= 80 else url[:80] + "..."
        raise InvalidInput(f"{shown!r} is not a flake URL", field="url")
    if url.startswith("-"):  # `nix` would read it as an option
        raise InvalidInput(f"{url[:80]!r} is not a flake URL: it must not start with '-'",
                           field="url")
    return url


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["configurations"] = json.loads(d.get("configurations") or "[]")
    d["macs"] = json.loads(d.get("macs") or "{}")
    return d


def add_flake(conn: sqlite3.Connection, url: str) -> dict[str, Any]:
    url = validate_url(url)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM flakes WHERE url = ?", (url,)).fetchone():
            raise Conflict(f"flake {url} is already added")
        conn.execute("INSERT INTO flakes (url, created_at, eval_state) VALUES (?, ?, 'queued')",
                     (url, now()))
        events.record(conn, "flake.added", f"flake {url} added; evaluating it")
    return get_flake(conn, url)


def request_evaluation(conn: sqlite3.Connection, url: str) -> dict[str, Any]:
    """Queue an evaluation (refresh) of the flake; one already queued or running stays."""
    with transaction(conn):
        f = get_flake(conn, url)
        conn.execute("UPDATE flakes SET eval_state = 'queued' WHERE id = ? AND eval_state = 'idle'",
                     (f["id"],))
    return get_flake(conn, str(f["id"]))


def request_all_evaluations(conn: sqlite3.Connection) -> int:
    """Queue an evaluation of every idle flake (the build worker's schedule); how many."""
    return conn.execute("UPDATE flakes SET eval_state = 'queued' WHERE eval_state = 'idle'"
                        ).rowcount


# an evaluation claimed this long ago by a process that died is claimed again
STALE_EVALUATION_SECONDS = 1800


def claim_evaluation(conn: sqlite3.Connection, flake_id: int | None = None
                     ) -> dict[str, Any] | None:
    """Take the oldest queued flake (or this one, if queued) for evaluation."""
    with transaction(conn):
        stale = now() - STALE_EVALUATION_SECONDS
        sql = ("SELECT id FROM flakes WHERE (eval_state = 'queued' OR (eval_state = 'evaluating' "
               "AND eval_started_at < ?))")
        args: list[Any] = [stale]
        if flake_id is not None:
            sql += " AND id = ?"
            args.append(flake_id)
        r = conn.execute(sql + " ORDER BY id LIMIT 1", args).fetchone()
        if r is None:
            return None
        conn.execute("UPDATE flakes SET eval_state = 'evaluating', eval_started_at = ? "
                     "WHERE id = ?", (now(), r["id"]))
    return get_flake(conn, str(r["id"]))


def finish_evaluation(conn: sqlite3.Connection, flake_id: int) -> None:
    conn.execute("UPDATE flakes SET eval_state = 'idle' WHERE id = ?", (flake_id,))


def get_flake(conn: sqlite3.Connection, url: str) -> dict[str, Any]:
    r = conn.execute("SELECT * FROM flakes WHERE url = ? OR id = ?",
                     (url, int(url) if str(url).isdigit() else -1)).fetchone()
    if r is None:
        raise NotFound(f"no flake {url!r}")
    return _row(r)


def list_flakes(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [_row(r) for r in conn.execute("SELECT * FROM flakes ORDER BY id")]


def remove_flake(conn: sqlite3.Connection, url: str) -> None:
    with transaction(conn):
        f = get_flake(conn, url)
        conn.execute("DELETE FROM flakes WHERE id = ?", (f["id"],))
        events.record(conn, "flake.removed", f"flake {f['url']} removed")


def save_refresh(conn: sqlite3.Connection, flake_id: int, *, configurations: list[str] | None,
                 locked_url: str | None, error: str | None) -> None:
    """Record a refresh; an error keeps the last good listing."""
    with transaction(conn):
        if error is None:
            conn.execute("UPDATE flakes SET configurations = ?, locked_url = ?, last_refresh = ?, "
                         "last_error = NULL WHERE id = ?",
                         (json.dumps(sorted(configurations or [])), locked_url, now(), flake_id))
        else:
            conn.execute("UPDATE flakes SET last_refresh = ?, last_error = ? WHERE id = ?",
                         (now(), error, flake_id))
        events.record(conn, "flake.refreshed" if error is None else "flake.refresh_failed",
                      error or f"{len(configurations or [])} configurations",
                      level="info" if error is None else "error")
