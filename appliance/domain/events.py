"""The event log: every lease change, boot step, build and state change.

Events that traffic without a login can cause (boot scripts, TFTP and HTTP boot
transfers, DHCP, rejected agent reports, failed or throttled logins: `is_anonymous`)
are written within a budget per kind and source (`AnonymousBudget`): what is over
it is counted and written as one `events.suppressed` event per kind and source when
its minute ends, never row by row. `prune` (run by serve's retention service) keeps
the log within `retention.event_days` and `retention.event_rows`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidInput
from appliance.state.db import now, transaction
from appliance.state.status import storage

log = logging.getLogger("nixie.events")

ANONYMOUS_PREFIXES = ("boot.", "dhcp.")
ANONYMOUS_KINDS = frozenset({"agent.rejected", "auth.login_failed", "auth.login_throttled",
                             "setup.code_refused", "flake.hook_rejected",
                             "flake.hook_received"})
SUPPRESSED = "events.suppressed"
DEFAULT_PER_SOURCE = 30  # events of one kind from one source a minute (retention.anonymous_events_per_minute)
KIND_FACTOR = 20  # all sources together: this many sources' worth of one kind a minute


def is_anonymous(kind: str) -> bool:
    """An event kind any client can cause without logging in."""
    return kind in ANONYMOUS_KINDS or kind.startswith(ANONYMOUS_PREFIXES)


@dataclass(frozen=True)
class Suppressed:
    """Events of `kind` from `source` not written because they were over the budget."""

    kind: str
    source: str
    count: int
    since: float  # wall time the window began


class _Window:
    __slots__ = ("start", "wall", "count", "over")

    def __init__(self, start: float, wall: float):
        self.start, self.wall, self.count, self.over = start, wall, 0, 0


class AnonymousBudget:
    """At most `per_source` events of one anonymous kind from one source (a client address,
    or a MAC for DHCP) per `window` seconds, and `per_source * KIND_FACTOR` of one kind from
    all sources together (spoofed UDP sources cannot multiply it). What is over is
    counted; `take_due` returns one `Suppressed` per kind and source whose window has
    ended. Per process and in memory: a counter written for every refused request
    would be the growth this prevents. Sources past `max_sources` share one window
    per kind (source "*")."""

    def __init__(self, per_source: int = DEFAULT_PER_SOURCE, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_sources: int = 4096):
        self.per_source = per_source
        self.window = window
        self.clock = clock
        self.max_sources = max_sources
        self.suppressed = 0  # events not written since the start
        self._lock = threading.Lock()
        self._sources: dict[tuple[str, str], _Window] = {}
        self._kinds: dict[str, _Window] = {}
        self._due: list[Suppressed] = []
        self._next_sweep = 0.0

    def configure(self, per_source: int) -> None:
        with self._lock:
            self.per_source = per_source

    def reset(self) -> None:
        """Forget every window and summary (a test's fresh start)."""
        with self._lock:
            self._sources.clear()
            self._kinds.clear()
            self._due.clear()
            self.suppressed = 0

    def _current(self, table: dict, key, t: float) -> _Window:
        w = table.get(key)
        if w is not None and t - w.start < self.window:
            return w
        if w is not None and w.over and isinstance(key, tuple):
            self._due.append(Suppressed(key[0], key[1], w.over, w.wall))
        w = table[key] = _Window(t, now())
        return w

    def admit(self, kind: str, source: str | None) -> bool:
        """True: write this event; False: it is counted instead."""
        t = self.clock()
        key = (kind, source or "-")
        with self._lock:
            if t >= self._next_sweep:
                self._sweep(t)
            if key not in self._sources and len(self._sources) >= self.max_sources:
                key = (kind, "*")
            w = self._current(self._sources, key, t)
            k = self._current(self._kinds, kind, t)
            if w.count < self.per_source and k.count < self.per_source * KIND_FACTOR:
                w.count += 1
                k.count += 1
                return True
            w.over += 1
            self.suppressed += 1
            return False

    def _sweep(self, t: float) -> None:
        """Forget ended windows (queueing their summaries)."""
        self._next_sweep = t + min(self.window, 5.0)
        for key, w in list(self._sources.items()):
            if t - w.start >= self.window:
                if w.over:
                    self._due.append(Suppressed(key[0], key[1], w.over, w.wall))
                del self._sources[key]
        for kind, w in list(self._kinds.items()):
            if t - w.start >= self.window:
                del self._kinds[kind]

    def take_due(self) -> list[Suppressed]:
        """The summaries of ended windows (each returned once)."""
        t = self.clock()
        with self._lock:
            if self._due or t >= self._next_sweep:
                self._sweep(t)
            due, self._due = self._due, []
        return due


BUDGET = AnonymousBudget()  # this process's


def _insert(conn: sqlite3.Connection, kind: str, message: str, level: str, host_id, mac, ip,
            data) -> int:
    cur = conn.execute(
        "INSERT INTO events (ts, kind, level, message, host_id, mac, ip, data) VALUES (?,?,?,?,?,?,?,?)",
        (now(), kind, level, message, host_id, mac, ip, json.dumps(data) if data else None),
    )
    return cur.lastrowid


def _address(source: str) -> str | None:
    try:
        return str(ipaddress.ip_address(source))
    except ValueError:
        return None


def summary_args(s: Suppressed, per_source: int) -> dict[str, Any]:
    """The `events.suppressed` event for `s`, as keyword arguments of `record`."""
    who = "all sources past the tracked ones" if s.source == "*" else s.source
    return {"kind": SUPPRESSED, "level": "warning",
            "message": f"{s.count} {s.kind} event{'s' if s.count != 1 else ''} from {who} not "
                       f"recorded: over the budget of {per_source} a minute per source",
            "ip": _address(s.source),
            "mac": s.source if _address(s.source) is None and s.source not in ("*", "-") else None,
            "data": {"kind": s.kind, "source": s.source, "count": s.count, "since": s.since}}


def flush_suppressed(conn: sqlite3.Connection, budget: AnonymousBudget | None = None) -> int:
    """Write the summaries of ended windows. Returns how many were written."""
    budget = budget or BUDGET
    due = budget.take_due()
    for s in due:
        a = summary_args(s, budget.per_source)
        _insert(conn, a["kind"], a["message"], a["level"], None, a["mac"], a["ip"], a["data"])
    return len(due)


def record(conn: sqlite3.Connection, kind: str, message: str = "", *, level: str = "info",
           host_id: int | None = None, mac: str | None = None, ip: str | None = None,
           data: dict[str, Any] | None = None) -> int | None:
    """Write one event; None when it is an anonymous kind over its source's budget."""
    if is_anonymous(kind) and not BUDGET.admit(kind, ip or mac):
        return None
    flush_suppressed(conn)
    return _insert(conn, kind, message, level, host_id, mac, ip, data)


def admitted(items: Iterable, key: Callable[[Any], tuple[str, str | None]]) -> list:
    """The items (events about to be written in bulk, like the DHCP server's) within the
    budget; `key(item)` is its (kind, source)."""
    out = []
    for item in items:
        kind, source = key(item)
        if not is_anonymous(kind) or BUDGET.admit(kind, source):
            out.append(item)
    return out


# ------------------------------------------------------------------ retention

PRUNE_BATCH = 5000  # rows deleted per transaction: a DHCP commit never waits long


@dataclass(frozen=True)
class Pruned:
    events: int
    boot_tokens: int


def prune(conn: sqlite3.Connection, *, max_age_seconds: float, max_rows: int,
          t: float | None = None) -> Pruned:
    """Delete events older than `max_age_seconds` and the oldest beyond the newest
    `max_rows`, and boot tokens that have expired, in short transactions."""
    t = now() if t is None else t
    deleted = 0
    while True:
        with transaction(conn):
            n = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? "
                             "ORDER BY id LIMIT ?)", (t - max_age_seconds, PRUNE_BATCH)).rowcount
        deleted += n
        if n < PRUNE_BATCH:
            break
    row = conn.execute("SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?",
                       (max_rows,)).fetchone()
    if row is not None:
        while True:
            with transaction(conn):
                n = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM events "
                                 "WHERE id <= ? ORDER BY id LIMIT ?)",
                                 (row[0], PRUNE_BATCH)).rowcount
            deleted += n
            if n < PRUNE_BATCH:
                break
    with transaction(conn):
        tokens = conn.execute("DELETE FROM boot_tokens WHERE expires_at < ?", (t,)).rowcount
    return Pruned(deleted, tokens)


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
PAGE_MAX = 500  # the largest page of `search` (GET /api/v1/events documents it)


def search(conn: sqlite3.Connection, *, kind: str | None = None, host_id: int | None = None,
           level: str | None = None, before_id: int | None = None,
           limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, filtered; page on with `before_id` = the last id seen (at most
    PAGE_MAX + 1 rows: a page of PAGE_MAX and the one that says another follows).
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
    return _newest_first(conn, where + more, args + more_args, max(1, min(int(limit), PAGE_MAX + 1)))


PRUNE_SECONDS = 300.0
STORAGE_LOG_SECONDS = 60.0


class RetentionService:
    """serve's service `retention`: at start and every PRUNE_SECONDS, writes the summaries
    of suppressed anonymous events, prunes the event log and expired boot tokens to
    `retention.*`, and logs a warning while the disk under state_dir is (nearly) full."""

    name = "retention"

    def __init__(self, store, cfg, interval: float = PRUNE_SECONDS):
        self.store = store
        self.max_age_seconds = cfg.retention.event_days * 86400.0
        self.max_rows = cfg.retention.event_rows
        self.state_dir = cfg.state_dir
        self.interval = interval
        BUDGET.configure(cfg.retention.anonymous_events_per_minute)
        self.events_pruned = 0
        self.tokens_pruned = 0
        self.summaries = 0
        self.last_error: str | None = None
        self._storage_logged = -STORAGE_LOG_SECONDS

    def run(self, stop: threading.Event) -> None:
        while True:
            self.run_once()
            if stop.wait(self.interval):
                return

    def run_once(self) -> None:
        conn = self.store.conn()
        try:
            self.summaries += flush_suppressed(conn)
            p = prune(conn, max_age_seconds=self.max_age_seconds, max_rows=self.max_rows)
            self.events_pruned += p.events
            self.tokens_pruned += p.boot_tokens
            self.last_error = None
            if p.events or p.boot_tokens:
                log.info("event log pruned", extra={"events": p.events, "boot_tokens": p.boot_tokens})
        except sqlite3.OperationalError as e:  # a full disk: deleting needs space too
            self.last_error = str(e)
            log.warning("could not prune the event log", extra={"error": str(e)})
        disk = storage(self.state_dir)
        t = time.monotonic()
        if not disk["ok"] and t - self._storage_logged >= STORAGE_LOG_SECONDS:
            self._storage_logged = t
            log.error(disk["warning"], extra={"free_bytes": disk["free_bytes"]})

    def stats(self) -> dict[str, Any]:
        return {"events_pruned": self.events_pruned, "boot_tokens_pruned": self.tokens_pruned,
                "suppressed": BUDGET.suppressed, "summaries": self.summaries,
                "last_error": self.last_error}
