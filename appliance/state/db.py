"""SQLite state at state_dir/nixie.db: WAL, busy timeout, versioned migrations.

Every thread opens its own connection with `connect()`; the CLI, the web UI
and the services share the file safely (WAL readers never block the writer,
writers wait up to the busy timeout).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from appliance.state.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000
SCHEMA_VERSION = max(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    pass


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def connect(path: str | Path, *, migrate: bool = True) -> sqlite3.Connection:
    """Open (and by default migrate) the state database."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    _configure(conn)
    if migrate:
        apply_migrations(conn)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def apply_migrations(conn: sqlite3.Connection) -> list[int]:
    """Bring the schema up to date, one version per transaction. Returns versions applied."""
    applied: list[int] = []
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this program's ({SCHEMA_VERSION})"
        )
    for version in sorted(v for v in MIGRATIONS if v > current):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated while we waited for the lock
            if schema_version(conn) >= version:
                conn.execute("ROLLBACK")
                continue
            for statement in _split_sql(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def _split_sql(script: str) -> Iterator[str]:
    buf: list[str] = []
    for line in script.splitlines():
        buf.append(line)
        candidate = "\n".join(buf)
        if sqlite3.complete_statement(candidate):
            if candidate.strip():
                yield candidate
            buf = []
    rest = "\n".join(buf).strip()
    if rest:
        yield rest


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Store:
    """The state database of one appliance: a path and per-thread connections."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        conn = connect(self.path)  # migrate once, up front
        conn.close()

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = connect(self.path, migrate=False)
            self._local.conn = c
        return c

    def new_connection(self) -> sqlite3.Connection:
        return connect(self.path, migrate=False)

    def utils(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.conn())

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


def now() -> float:
    return time.time()
