"""The DHCPv6 address pool, in memory: bindings by address and by (DUID, IAID).

Addresses are ints. A binding (`Lease6`) is `offered` (held for an ADVERTISE,
never stored), `bound`, `released`, `declined` (quarantined) or `expired`. An
address is free when nothing holds it, when its holder's time ran out, or when
it was released; a reservation (by MAC) keeps it for its host alone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from socket import AF_INET6, inet_ntop, inet_pton
from typing import Any

OFFERED, BOUND, RELEASED, DECLINED, EXPIRED = "offered", "bound", "released", "declined", "expired"

Key = tuple[bytes, int]  # (DUID, IAID)


def ip6_to_int(a: str | bytes) -> int:
    """An address (text or 16 bytes) as an int; ValueError when it is not IPv6.
    `inet_pton` is some ten times faster than `ipaddress` on the packet path."""
    if isinstance(a, bytes):
        return int.from_bytes(a, "big")
    try:
        return int.from_bytes(inet_pton(AF_INET6, a), "big")
    except (OSError, TypeError):
        raise ValueError(f"{a!r} is not an IPv6 address") from None


def int_to_ip6(n: int) -> str:
    """The RFC 5952 text of an address, as `str(ipaddress.IPv6Address(n))` gives it."""
    s = inet_ntop(AF_INET6, n.to_bytes(16, "big"))
    return s if "." not in s else str(ipaddress.IPv6Address(n))  # ::ffff:a.b.c.d forms


@dataclass(slots=True)
class Lease6:
    address: int
    key: Key
    mac: str | None
    hostname: str | None
    state: str
    starts: float
    expires: float


class Pool6:
    def __init__(self, first: int, last: int, network: ipaddress.IPv6Network, *,
                 offer_hold: float = 30.0):
        self.network = network
        self.offer_hold = offer_hold
        self.by_addr: dict[int, Lease6] = {}
        self.by_key: dict[Key, Lease6] = {}
        self.reserved: dict[str, int] = {}  # mac -> address
        self._reserved_addrs: dict[int, str] = {}
        self.set_range(first, last)

    def set_range(self, first: int, last: int) -> None:
        if last < first:
            raise ValueError("the DHCPv6 range ends before it starts")
        self.first, self.last = first, last
        self._cursor = first

    def set_reservations(self, by_mac: dict[str, int]) -> None:
        self.reserved = dict(by_mac)
        self._reserved_addrs = {a: m for m, a in by_mac.items()}

    def in_network(self, a: int) -> bool:
        return (a >> (128 - self.network.prefixlen)) == (
            int(self.network.network_address) >> (128 - self.network.prefixlen))

    def load(self, leases: list[Lease6]) -> None:
        for le in leases:
            self.by_addr[le.address] = le
            if le.state == BOUND:
                cur = self.by_key.get(le.key)
                if cur is None or cur.expires < le.expires:
                    self.by_key[le.key] = le

    def _free_for(self, a: int, key: Key, mac: str | None, now: float) -> bool:
        """Whether `a` may be given to (key, mac) now."""
        owner = self._reserved_addrs.get(a)
        if owner is not None and owner != mac:
            return False
        if owner is None and not (self.first <= a <= self.last):
            return False
        le = self.by_addr.get(a)
        if le is None or le.key == key:
            return le is None or le.state != DECLINED or le.expires <= now
        return le.expires <= now or le.state in (RELEASED, EXPIRED)

    def usable_by(self, a: int, key: Key, mac: str | None, now: float) -> bool:
        return self._free_for(a, key, mac, now)

    def current(self, key: Key, now: float) -> Lease6 | None:
        le = self.by_key.get(key)
        if le is not None and le.key == key and le.state in (OFFERED, BOUND) and le.expires > now:
            return le
        return None

    def choose(self, key: Key, mac: str | None, hints: list[int], now: float) -> int | None:
        """The address for this IA: its current binding, its reservation, a free hint,
        else the next free address in the range."""
        le = self.current(key, now)
        if le is not None and self._free_for(le.address, key, mac, now):
            return le.address
        if mac is not None:
            r = self.reserved.get(mac)
            if r is not None and self._free_for(r, key, mac, now):
                return r
        for h in hints:
            if self._free_for(h, key, mac, now):
                return h
        # an expired binding of this client keeps its address when it is still free
        old = self.by_key.get(key)
        if old is not None and self._free_for(old.address, key, mac, now):
            return old.address
        size = self.last - self.first + 1
        a = self._cursor
        for _ in range(min(size, 1 << 20)):
            if a > self.last:
                a = self.first
            if self._free_for(a, key, mac, now) and a not in self._reserved_addrs:
                self._cursor = a + 1
                return a
            a += 1
        return None

    def offer(self, key: Key, mac: str | None, a: int, now: float) -> Lease6:
        le = self.by_addr.get(a)
        if le is not None and le.key == key and le.state == BOUND and le.expires > now:
            return le  # already bound: an ADVERTISE repeats it
        le = Lease6(a, key, mac, None, OFFERED, now, now + self.offer_hold)
        self._put(le)
        return le

    def bind(self, key: Key, mac: str | None, a: int, hostname: str | None, now: float,
             valid: int) -> list[Lease6]:
        """Bind `a` to the IA; a different address the IA held before is released.
        Returns every lease changed (to store)."""
        changed = []
        prev = self.by_key.get(key)
        if prev is not None and prev.address != a and prev.state == BOUND:
            prev.state, prev.expires = RELEASED, now
            changed.append(prev)
        le = self.by_addr.get(a)
        if le is not None and le.key == key and le.state == BOUND:
            le.expires = now + valid
            le.mac = mac or le.mac
            le.hostname = hostname or le.hostname
        else:
            le = Lease6(a, key, mac, hostname, BOUND, now, now + valid)
            self._put(le)
        changed.append(le)
        return changed

    def release(self, key: Key, a: int, now: float) -> Lease6 | None:
        le = self.by_addr.get(a)
        if le is None or le.key != key or le.state != BOUND:
            return None
        le.state, le.expires = RELEASED, now
        return le

    def decline(self, key: Key, a: int, now: float, quarantine: float) -> Lease6 | None:
        le = self.by_addr.get(a)
        if le is None or le.key != key:
            return None
        le.state, le.expires = DECLINED, now + quarantine
        le.key = (b"", 0)
        self.by_key.pop(key, None)
        return le

    def _put(self, le: Lease6) -> None:
        old = self.by_addr.get(le.address)
        if old is not None and old.key != le.key and self.by_key.get(old.key) is old:
            del self.by_key[old.key]
        self.by_addr[le.address] = le
        self.by_key[le.key] = le

    def stats(self, now: float) -> dict[str, Any]:
        bound = sum(1 for le in self.by_addr.values() if le.state == BOUND and le.expires > now)
        return {"size": self.last - self.first + 1, "bound": bound}
