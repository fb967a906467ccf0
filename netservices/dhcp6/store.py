"""What the DHCPv6 server needs from the appliance: a durable lease store and the
host table. `appliance/domain/lease_store6.py` implements it over the state DB.
Events are `netservices.dhcp.store.EventRecord`s, as for DHCPv4."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from netservices.dhcp.store import EventRecord


@dataclass(slots=True)
class Lease6Record:
    """One row of the `leases6` table."""

    address: str
    duid: str  # hex
    iaid: int
    mac: str | None  # from the DUID, the relay's option 79 or an EUI-64 link-local source
    hostname: str | None
    state: str  # bound | released | declined | expired
    starts: float
    expires: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Host6Entry:
    """What DHCPv6 knows about a registered machine."""

    id: int
    name: str
    ip6_reservation: str | None = None


class Lease6Store(Protocol):
    def load_leases6(self) -> list[Lease6Record]:
        """Every lease row, at start."""
        ...

    def hosts6_by_mac(self) -> dict[str, Host6Entry]:
        """MAC (lower-case, colons) -> host; re-read every few seconds."""
        ...

    def commit(self, leases: list[Lease6Record], events: list[EventRecord]) -> None:
        """Write the leases (upsert by address) and events in one durable transaction;
        return only once it is on disk."""
        ...

    def close(self) -> None: ...
