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
    d["toplevels"] = json.loads(d.get("toplevels") or "{}")
    d["hook_enabled"] = bool(d.get("hook_enabled"))
    return d


POLICIES = ("on_change", "manual")


def validate_policy(policy: object) -> str:
    if policy not in POLICIES:
        raise InvalidInput(f"build_policy must be one of {', '.join(POLICIES)}, got {policy!r}",
                           field="build_policy")
    return policy  # type: ignore[return-value]


def add_flake(conn: sqlite3.Connection, url: str, policy: str = "on_change") -> dict[str, Any]:
    url = validate_url(url)
    policy = validate_policy(policy)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM flakes WHERE url = ?", (url,)).fetchone():
            raise Conflict(f"flake {url} is already added")
        conn.execute("INSERT INTO flakes (url, created_at, eval_state, build_policy) "
                     "VALUES (?, ?, 'queued', ?)", (url, now(), policy))
        events.record(conn, "flake.added", f"flake {url} added; evaluating it")
    return get_flake(conn, url)


def set_policy(conn: sqlite3.Connection, url: str, policy: str) -> dict[str, Any]:
    """on_change: bind declared hosts and build changed systems by itself; manual: neither."""
    policy = validate_policy(policy)
    with transaction(conn):
        f = get_flake(conn, url)
        conn.execute("UPDATE flakes SET build_policy = ? WHERE id = ?", (policy, f["id"]))
        events.record(conn, "flake.updated", f"flake {f['url']}: build policy {policy}")
        if policy == "on_change" and f["build_policy"] != policy:
            # the listing may predate the policy (no toplevels): evaluate again
            conn.execute("UPDATE flakes SET eval_state = 'queued' WHERE id = ? "
                         "AND eval_state = 'idle'", (f["id"],))
    return get_flake(conn, str(f["id"]))


# a webhook within this many seconds of the last evaluation waits for the next one, so a
# flood of (even validly signed, replayed) hooks costs at most one evaluation this often
HOOK_MIN_INTERVAL = 10.0


def hook_received(conn: sqlite3.Connection, flake_id: int, t: float | None = None) -> str:
    """A verified webhook: queue an evaluation, or mark one pending when the last was too
    recent (the build worker queues it when the interval has passed). 'queued' | 'pending'."""
    t = now() if t is None else t
    with transaction(conn):
        f = get_flake(conn, str(flake_id))
        recent = f["last_refresh"] is not None and t - f["last_refresh"] < HOOK_MIN_INTERVAL
        if f["eval_state"] == "idle" and not recent:
            conn.execute("UPDATE flakes SET eval_state = 'queued', hook_pending_at = NULL "
                         "WHERE id = ?", (flake_id,))
            return "queued"
        if f["eval_state"] == "queued":
            return "queued"
        conn.execute("UPDATE flakes SET hook_pending_at = coalesce(hook_pending_at, ?) "
                     "WHERE id = ?", (t, flake_id))
        return "pending"


def queue_pending_hooks(conn: sqlite3.Connection, t: float | None = None) -> int:
    """Queue the idle flakes whose webhook waited out `HOOK_MIN_INTERVAL`; how many."""
    t = now() if t is None else t
    return conn.execute(
        "UPDATE flakes SET eval_state = 'queued', hook_pending_at = NULL WHERE eval_state = "
        "'idle' AND hook_pending_at IS NOT NULL AND (last_refresh IS NULL OR last_refresh <= ?)",
        (t - HOOK_MIN_INTERVAL,)).rowcount


def flakes_to_check(conn: sqlite3.Connection, every: float, t: float | None = None
                    ) -> list[dict[str, Any]]:
    """on_change flakes, idle, not checked (nor evaluated) for `every` seconds."""
    t = now() if t is None else t
    return [_row(r) for r in conn.execute(
        "SELECT * FROM flakes WHERE build_policy = 'on_change' AND eval_state = 'idle' "
        "AND coalesce(max(coalesce(last_checked, 0), coalesce(last_refresh, 0)), 0) <= ? "
        "ORDER BY id", (t - every,))]


def save_check(conn: sqlite3.Connection, flake_id: int, locked_url: str | None) -> bool:
    """Record a locked-revision check; queue an evaluation (True) when the revision moved."""
    with transaction(conn):
        f = get_flake(conn, str(flake_id))
        conn.execute("UPDATE flakes SET last_checked = ? WHERE id = ?", (now(), flake_id))
        if locked_url is None or locked_url == f["locked_url"] or f["eval_state"] != "idle":
            return False
        conn.execute("UPDATE flakes SET eval_state = 'queued' WHERE id = ?", (flake_id,))
        events.record(conn, "flake.changed", f"flake {f['url']} moved to {locked_url}; "
                      "evaluating it", data={"locked_url": locked_url})
        return True


def save_toplevels(conn: sqlite3.Connection, flake_id: int,
                   toplevels: dict[str, dict[str, str]]) -> None:
    conn.execute("UPDATE flakes SET toplevels = ? WHERE id = ?",
                 (json.dumps(toplevels, sort_keys=True), flake_id))


def set_credential_kind(conn: sqlite3.Connection, flake_id: int, kind: str) -> None:
    """What `appliance.nix.flake_access` stored for the flake (never the secret)."""
    with transaction(conn):
        f = get_flake(conn, str(flake_id))
        conn.execute("UPDATE flakes SET credential = ? WHERE id = ?", (kind, flake_id))
        what = {"none": "credential removed", "token": "access token set",
                "ssh_key": "SSH deploy key set"}[kind]
        events.record(conn, "flake.credential", f"flake {f['url']}: {what}")


def set_hook_enabled(conn: sqlite3.Connection, flake_id: int, enabled: bool) -> None:
    with transaction(conn):
        f = get_flake(conn, str(flake_id))
        conn.execute("UPDATE flakes SET hook_enabled = ? WHERE id = ?", (int(enabled), flake_id))
        events.record(conn, "flake.hook", f"flake {f['url']}: webhook "
                      + ("secret made" if enabled else "turned off"))


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
