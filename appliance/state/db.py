"""SQLite state at state_dir/nixie.db: WAL, busy timeout, versioned migrations.

Every thread opens its own connection with `connect()`; the CLI, the web UI
and the services share the file safely (WAL readers never block the writer,
writers wait up to the busy timeout).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from appliance.state.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000
DB_MODE = 0o600  # nixie.db and its -wal/-shm (SQLite gives those the database's mode)
STATE_DIR_MODE = 0o700
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
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    _create_private(path)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    _configure(conn)
    if migrate:
        apply_migrations(conn)
    return conn


def _create_private(path: Path) -> None:
    """Create a missing database file owner-only (SQLite would create it with the umask's
    mode, world-readable under the usual 022); an existing one is left as it is."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DB_MODE))
    except FileExistsError:
        pass


def secure_state(state_dir: str | Path, db_path: str | Path) -> list[str]:
    """At serve's start: the state directory owner-only (0700) and the database files
    0600, whatever made them (an older version, a copy, a umask of 022). Creates the
    directory if it is missing. Returns the paths whose mode was changed."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    changed = []
    wanted = [(state_dir, STATE_DIR_MODE)] + [
        (Path(f"{db_path}{suffix}"), DB_MODE) for suffix in ("", "-wal", "-shm")]
    for p, mode in wanted:
        try:
            if stat.S_IMODE(p.stat().st_mode) != mode:
                p.chmod(mode)
                changed.append(str(p))
        except FileNotFoundError:
            continue
    return changed


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
