"""The DHCPv6 server's lease store over the state DB (`netservices.dhcp6.store.Lease6Store`).

The same durability as DHCPv4 (`lease_store.SqliteLeaseStore`, whose connection
set-up and checkpointer it shares): one connection owned by the DHCPv6 service,
`synchronous = FULL` (or NORMAL with `dhcp.lease_sync`), and the server sends a
batch's REPLYs only once `commit` returned.
"""

from __future__ import annotations

import json
import sqlite3

from appliance.domain import machines
from appliance.domain.lease_store import EVENTS, BatchInsert, SqliteLeaseStore
from netservices.dhcp.store import EventRecord
from netservices.dhcp6.store import Host6Entry, Lease6Record

_LEASE6_TAIL = (
    " ON CONFLICT(address) DO UPDATE SET duid = excluded.duid, iaid = excluded.iaid, "
    "mac = coalesce(excluded.mac, leases6.mac), "
    "host_id = CASE WHEN excluded.mac IS NULL THEN leases6.host_id ELSE excluded.host_id END, "
    "hostname = CASE WHEN excluded.duid = leases6.duid "
    "THEN coalesce(excluded.hostname, leases6.hostname) ELSE excluded.hostname END, "
    "state = excluded.state, starts = excluded.starts, expires = excluded.expires, "
    "updated_at = excluded.updated_at")
# host_id: the host that has the lease's MAC (a primary-key probe of the small host_macs),
# so that only registered hosts' leases enter the leases6_host index (migration 44)
_LEASES6 = BatchInsert(
    "leases6 (address, duid, iaid, mac, hostname, state, starts, expires, updated_at, host_id)",
    9, select="column1, column2, column3, column4, column5, column6, column7, column8, column9, "
    "(SELECT host_id FROM host_macs WHERE mac = column4)", tail=_LEASE6_TAIL)


class SqliteLease6Store(SqliteLeaseStore):
    _batches = (_LEASES6, EVENTS)

    def load_leases6(self) -> list[Lease6Record]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT address, duid, iaid, mac, hostname, state, starts, expires, updated_at "
                "FROM leases6")
            return [Lease6Record(*r) for r in rows]

    def hosts6_by_mac(self) -> dict[str, Host6Entry]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT m.mac, h.id, h.name, h.ip6_reservation "
                "FROM host_macs m JOIN hosts h ON h.id = m.host_id").fetchall()
        return {r[0]: Host6Entry(r[1], r[2], r[3]) for r in rows}

    def _not_durable(self, leases: list[Lease6Record]) -> set[str]:
        """A batch the disk refused even without its events: unlike DHCPv4's ACKs, a held
        REPLY is not matched to its rows (one REPLY may bind several IA_NAs), so none of
        the batch's REPLYs leave; the commit raises and the service restarts from the DB."""
        self.not_durable += sum(1 for r in leases if r.state == "bound")
        raise sqlite3.OperationalError(f"DHCPv6 leases not written: {self.disk_error}")

    def _commit(self, leases: list[Lease6Record], events: list[EventRecord],
                seen: list[machines.Sighting] | None = None) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            machines.record(c, seen or [])
            if leases:
                _LEASES6.run(c, [(r.address, r.duid, r.iaid, r.mac, r.hostname, r.state,
                                  r.starts, r.expires, r.updated_at) for r in leases])
            if events:
                EVENTS.run(c, [(e.ts, e.kind, e.level, e.message, e.host_id, e.mac, e.ip,
                                json.dumps(e.data) if e.data else None) for e in events])
            c.execute("COMMIT")  # on a full disk this is usually what fails
        except BaseException:
            if c.in_transaction:  # SQLite may have rolled back already
                c.execute("ROLLBACK")
            raise
