"""The DHCP server's lease store over the state DB (`netservices.dhcp.store.LeaseStore`).

The server keeps every lease in memory; this is only for durability. One
connection, owned by the DHCP thread, with `synchronous = FULL`: a commit
returns once the WAL is on disk, and the server sends the batch's ACKs only
after that.

A full disk (or a failing one) must not stop DHCP: a commit that cannot be written
is retried without its events; if the leases still cannot be written, a renewal of
a binding the database already holds (same address, MAC and client id, its row
still bound and unexpired) is answered from that row, and every other lease of the
batch is returned as not durable, so its ACK does not leave (the client asks again).
`disk_trouble()` says so for the health report, and every such commit is logged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from appliance.domain import machines
from appliance.domain.events import admitted
from appliance.state.db import connect
from netservices.dhcp.store import EventRecord, HostEntry, LeaseRecord

log = logging.getLogger("nixie.leases")
_SQLITE_IOERR, _SQLITE_FULL = 10, 13
LOG_EVERY_SECONDS = 10.0  # while the disk stays full, one error line per this long


def is_disk_error(e: BaseException) -> bool:
    """SQLITE_FULL or an I/O error (any extended code): the disk, not the data."""
    code = getattr(e, "sqlite_errorcode", None)
    return isinstance(e, sqlite3.OperationalError) and code is not None and \
        (code & 0xFF) in (_SQLITE_FULL, _SQLITE_IOERR)

_LEASE_TAIL = (
    " ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, "
    "client_id = excluded.client_id, hostname = CASE WHEN excluded.mac = leases.mac "
    "THEN coalesce(excluded.hostname, leases.hostname) ELSE excluded.hostname END, "
    "state = excluded.state, starts = excluded.starts, expires = excluded.expires, "
    "updated_at = excluded.updated_at")
CHUNK = 64  # rows per statement step at most
SHAPE_STEP = 8  # a statement's row count is a multiple of this: CHUNK / SHAPE_STEP shapes


class BatchInsert:
    """Multi-row INSERTs (or upserts) of up to CHUNK rows per statement: one step per
    chunk rather than one per row (each step hands the GIL to the DHCP loop and back).

    A batch's rows are padded with all-NULL rows up to the next multiple of SHAPE_STEP,
    which the statement's `WHERE column1 IS NOT NULL` drops (the first column is never
    NULL in a real row). So a table has CHUNK / SHAPE_STEP statement shapes, not one per
    batch size: each is compiled once (`prepare`, at the store's start) and stays in the
    connection's statement cache. One shape per size meant a fresh DHCP server compiled
    up to 64 upserts and 64 event inserts (~40 ms) during its first thousand leases, and
    the 130 shapes did not fit the 128-statement cache, so some were compiled again and
    again (bench/dhcp6)."""

    def __init__(self, into: str, width: int, select: str = "*", tail: str = ""):
        self.width = width
        row = "(" + ",".join("?" * width) + ")"
        self._sql = {n: f"INSERT INTO {into} SELECT {select} FROM (VALUES "
                        f"{','.join([row] * n)}) WHERE column1 IS NOT NULL{tail}"
                     for n in range(SHAPE_STEP, CHUNK + 1, SHAPE_STEP)}

    def prepare(self, conn: sqlite3.Connection) -> None:
        """Compile every shape (each runs once with only padding: it writes nothing)."""
        for n, sql in self._sql.items():
            conn.execute(sql, [None] * (self.width * n))

    def run(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        w = self.width
        for k in range(0, len(rows), CHUNK):
            part = rows[k : k + CHUNK]
            n = -(-len(part) // SHAPE_STEP) * SHAPE_STEP
            params = [v for row in part for v in row]
            params += [None] * (w * (n - len(part)))
            conn.execute(self._sql[n], params)


_LEASES = BatchInsert(
    "leases (ip, mac, client_id, hostname, state, starts, expires, updated_at)", 8,
    tail=_LEASE_TAIL)
EVENTS = BatchInsert("events (ts, kind, level, message, host_id, mac, ip, data)", 8)


class SqliteLeaseStore:
    _batches: tuple[BatchInsert, ...] = (_LEASES, EVENTS)

    def __init__(self, db_path: str | Path, sync: str = "full"):
        if sync not in ("full", "normal"):
            raise ValueError(f"lease sync must be full or normal, not {sync!r}")
        self.conn = connect(db_path)
        self.conn.execute(f"PRAGMA synchronous = {sync.upper()}")
        # Lease commits dirty pages all over the leases_mac index: keep them in
        # memory. No checkpoint ever runs inside a lease commit (copying the WAL
        # into the database would hold that batch's ACKs): a checkpointer thread
        # with its own connection copies it every half second, concurrently with
        # the lease writes (PASSIVE), and the writer restarts the WAL once copied.
        self.conn.execute("PRAGMA cache_size = -65536")
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self.conn.execute(f"PRAGMA journal_size_limit = {64 << 20}")  # WAL kept after a restart
        try:
            for b in self._batches:
                b.prepare(self.conn)  # before the first lease, not during the first thousand
        except sqlite3.OperationalError:  # busy or full: each shape compiles at first use
            log.warning("could not prepare the lease statements", exc_info=True)
        self._db_path = db_path
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="dhcp-checkpoint", daemon=True)
        self._checkpointer.start()
        self._lock = threading.Lock()  # the commit thread and the loop share the connection
        # while commits fail on the disk: since when, the last error, and the counts
        self.disk_error_since: float | None = None
        self.disk_error: str | None = None
        self.kept_renewals = 0  # renewals answered from the row already on disk
        self.not_durable = 0  # leases whose ACK was held back
        self.lost_events = 0  # events a failing commit could not write
        self._logged_at = 0.0

    def load_leases(self) -> list[LeaseRecord]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT ip, mac, client_id, hostname, state, starts, expires, updated_at FROM leases")
            return [LeaseRecord(*r) for r in rows]

    def hosts_by_mac(self) -> dict[str, HostEntry]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT m.mac, h.id, h.name, h.mode, h.ip_reservation "
                "FROM host_macs m JOIN hosts h ON h.id = m.host_id").fetchall()
        return {r[0]: HostEntry(r[1], r[2], r[3], r[4]) for r in rows}

    def commit(self, leases: list[LeaseRecord], events: list[EventRecord]) -> set[str]:
        """Write the batch; returns the addresses whose leases are not on disk (their ACKs
        must not leave): empty unless the disk is full or failing."""
        seen = machines.sightings_of_events(events)  # every one, within or over the budget
        events = admitted(events, lambda e: (e.kind, e.mac or e.ip))
        with self._lock:
            try:
                self._commit(leases, events, seen)
            except sqlite3.OperationalError as e:
                if not is_disk_error(e):
                    raise
                return self._on_disk_error(leases, events, e)
            if self.disk_error_since is not None:
                log.warning("lease commits are written again", extra={
                    "after_seconds": round(time.time() - self.disk_error_since, 1)})
                self.disk_error_since = self.disk_error = None
            return set()

    def _on_disk_error(self, leases: list[LeaseRecord], events: list[EventRecord],
                       error: sqlite3.OperationalError) -> set[str]:
        if self.disk_error_since is None:
            self.disk_error_since = time.time()
        self.disk_error = str(error)
        self.lost_events += len(events)
        if events:
            try:
                self._commit(leases, [])  # the events are most of the pages
                self._log_trouble("lease commit written without its events", 0, len(events))
                return set()
            except sqlite3.OperationalError as e:
                if not is_disk_error(e):
                    raise
                self.disk_error = str(e)
        held = self._not_durable(leases)
        self._log_trouble("lease commit failed", len(held), len(events))
        return held

    def _not_durable(self, leases: list[LeaseRecord]) -> set[str]:
        """Of a batch that could not be written: the bound leases the DB does not already
        hold as the same binding, still valid (reading works on a full disk)."""
        bound = [r for r in leases if r.state == "bound"]
        on_disk: dict[str, Any] = {}
        for k in range(0, len(bound), 500):
            part = [r.ip for r in bound[k : k + 500]]
            for row in self.conn.execute(
                    "SELECT ip, mac, client_id, state, expires FROM leases WHERE ip IN "
                    f"({','.join('?' * len(part))})", part):
                on_disk[row[0]] = row
        held = set()
        for r in bound:
            row = on_disk.get(r.ip)
            if row is not None and row[1] == r.mac and row[2] == r.client_id and \
                    row[3] == "bound" and row[4] > r.updated_at:
                self.kept_renewals += 1
            else:
                held.add(r.ip)
        self.not_durable += len(held)
        return held

    def _log_trouble(self, what: str, held: int, events: int) -> None:
        t = time.monotonic()
        if t - self._logged_at < LOG_EVERY_SECONDS:
            return
        self._logged_at = t
        log.error(f"DISK FULL OR FAILING: {what}; renewals of leases on disk are still "
                  "answered, new leases are not", extra={
                      "error": self.disk_error, "acks_held": held, "events_lost": events,
                      "kept_renewals": self.kept_renewals, "not_durable": self.not_durable})

    def disk_trouble(self) -> dict[str, Any] | None:
        """None while commits are written; else since when they fail and what was kept."""
        if self.disk_error_since is None:
            return None
        return {"since": self.disk_error_since, "error": self.disk_error,
                "kept_renewals": self.kept_renewals, "not_durable": self.not_durable,
                "lost_events": self.lost_events}

    def _commit(self, leases: list[LeaseRecord], events: list[EventRecord],
                seen: list[machines.Sighting] | None = None) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            machines.record(c, seen or [])
            if leases:
                _LEASES.run(c, [(r.ip, r.mac, r.client_id, r.hostname, r.state, r.starts,
                                 r.expires, r.updated_at) for r in leases])
            if events:
                EVENTS.run(c, [(e.ts, e.kind, e.level, e.message, e.host_id, e.mac, e.ip,
                                json.dumps(e.data) if e.data else None) for e in events])
            c.execute("COMMIT")  # on a full disk this is usually what fails
        except BaseException:
            if c.in_transaction:  # SQLite may have rolled back already
                c.execute("ROLLBACK")
            raise

    def _checkpoint_loop(self) -> None:
        conn = connect(self._db_path, migrate=False)
        try:
            while not self._stop.wait(0.5):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception:  # noqa: BLE001 - housekeeping: the next round retries
                    pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._checkpointer.join(2)
        self.conn.close()
