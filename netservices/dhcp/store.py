"""What the DHCP server needs from the appliance: a durable lease store and the
host table. `appliance/domain/lease_store.py` implements it over the state DB."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class LeaseRecord:
    """One row of the `leases` table."""

    ip: str
    mac: str
    client_id: str | None  # hex
    hostname: str | None
    state: str  # offered | bound | released | declined | expired
    starts: float
    expires: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class HostEntry:
    """What DHCP knows about a registered machine."""

    id: int
    name: str
    mode: str = "netboot"
    ip_reservation: str | None = None


@dataclass(slots=True)
class EventRecord:
    """An event to record with the next lease commit (EventSink's arguments)."""

    kind: str
    message: str
    ts: float
    level: str = "info"
    host_id: int | None = None
    mac: str | None = None
    ip: str | None = None
    data: dict[str, Any] | None = field(default=None)


class LeaseStore(Protocol):
    def load_leases(self) -> list[LeaseRecord]:
        """Every lease row, at start."""
        ...

    def hosts_by_mac(self) -> dict[str, HostEntry]:
        """MAC (lower-case, colons) -> host; re-read every few seconds."""
        ...

    def commit(self, leases: list[LeaseRecord], events: list[EventRecord]) -> set[str] | None:
        """Write the leases (upsert by ip) and events in one durable transaction;
        return only once it is on disk. Returns the addresses whose leases could not be
        made durable (a full disk): their held ACKs are not sent. None or empty: all are."""
        ...

    def close(self) -> None: ...
