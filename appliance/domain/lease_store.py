"""The DHCP server's lease store over the state DB (`netservices.dhcp.store.LeaseStore`).

The server keeps every lease in memory; this is only for durability. One
connection, owned by the DHCP thread, with `synchronous = FULL`: a commit
returns once the WAL is on disk, and the server sends the batch's ACKs only
after that.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from appliance.state.db import connect
from netservices.dhcp.store import EventRecord, HostEntry, LeaseRecord

_LEASE_HEAD = "INSERT INTO leases (ip, mac, client_id, hostname, state, starts, expires, updated_at) VALUES "
_LEASE_TAIL = (
    " ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, "
    "client_id = excluded.client_id, hostname = CASE WHEN excluded.mac = leases.mac "
    "THEN coalesce(excluded.hostname, leases.hostname) ELSE excluded.hostname END, "
    "state = excluded.state, starts = excluded.starts, expires = excluded.expires, "
    "updated_at = excluded.updated_at")
_EVENT_HEAD = "INSERT INTO events (ts, kind, level, message, host_id, mac, ip, data) VALUES "
_ROW8 = "(?,?,?,?,?,?,?,?)"
CHUNK = 64


def _insert_rows(conn, head: str, tail: str, rows: list[tuple]) -> None:
    """Multi-row INSERTs of up to CHUNK rows: one statement step per chunk rather
    than one per row (each step hands the GIL to the DHCP loop and back)."""
    for k in range(0, len(rows), CHUNK):
        part = rows[k : k + CHUNK]
        sql = head + ",".join([_ROW8] * len(part)) + tail
        conn.execute(sql, [v for row in part for v in row])


class SqliteLeaseStore:
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
        self._db_path = db_path
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="dhcp-checkpoint", daemon=True)
        self._checkpointer.start()
        self._lock = threading.Lock()  # the commit thread and the loop share the connection

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

    def commit(self, leases: list[LeaseRecord], events: list[EventRecord]) -> None:
        with self._lock:
            self._commit(leases, events)

    def _commit(self, leases: list[LeaseRecord], events: list[EventRecord]) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if leases:
                _insert_rows(c, _LEASE_HEAD, _LEASE_TAIL,
                             [(r.ip, r.mac, r.client_id, r.hostname, r.state, r.starts, r.expires,
                               r.updated_at) for r in leases])
            if events:
                _insert_rows(c, _EVENT_HEAD, "",
                             [(e.ts, e.kind, e.level, e.message, e.host_id, e.mac, e.ip,
                               json.dumps(e.data) if e.data else None) for e in events])
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

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
