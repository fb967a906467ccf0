"""The address pool and its leases, in memory: which address a client gets.

SQLite is only for durability (the server commits changed leases in groups);
every decision here reads dicts. Addresses are ints. A client is known by its
key: the client identifier (option 61) when it sends one, else 0x01 + MAC.

Allocation order for a client: its reservation; the address it had; the
address it asks for; a never-used address of the range; the address whose
lease ended longest ago (released, expired, end of a decline quarantine); and
only when nothing else is free, a quarantined (declined) address, the one whose
quarantine ends first (as ISC dhcpd reclaims abandoned leases): a quarantine
never makes the pool run dry.
An offered address is held for `offer_hold` seconds, so two clients never get
one address.

A DECLINE counts only for an address offered or leased to the client that sends
it, and each client (by MAC) may hold at most `MAX_DECLINES_PER_CLIENT`
addresses in quarantine at a time: a forged DECLINE for an address somebody else
holds, or never handed out, changes nothing.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

OFFERED, BOUND, RELEASED, DECLINED, EXPIRED = "offered", "bound", "released", "declined", "expired"
MAX_DECLINES_PER_CLIENT = 2


@dataclass(slots=True)
class Lease:
    ip: int
    key: bytes  # b"" for an address nobody owns (declined)
    mac: str
    client_id: bytes | None
    hostname: str | None
    state: str
    starts: float
    expires: float  # the address is free again once now >= expires


def ip_to_int(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def int_to_ip(v: int) -> str:
    return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"


def client_key(client_id: bytes | None, mac: bytes) -> bytes:
    return client_id if client_id else b"\x01" + mac


class LeasePool:
    def __init__(self, first: int, last: int, *, network: int, prefix: int, server_ip: int,
                 offer_hold: float = 30.0):
        if last < first:
            raise ValueError("range end is before its start")
        self.first, self.last = first, last
        self.mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        self.network = network & self.mask
        self.broadcast = self.network | (~self.mask & 0xFFFFFFFF)
        self.server_ip = server_ip
        self.offer_hold = offer_hold
        self.by_ip: dict[int, Lease] = {}
        self.by_key: dict[bytes, Lease] = {}
        self.reserved_by_mac: dict[str, int] = {}
        self.reserved_ips: dict[int, str] = {}
        self._fresh = first  # every address below this one has been handed out once
        self._heap: list[tuple[float, int]] = []
        # MAC -> addresses it declined (some may have left quarantine since: see declines_held)
        self.declined_by: dict[str, set[int]] = {}

    def set_range(self, first: int, last: int) -> None:
        """Move the dynamic range (a settings change, applied live). Bindings stay:
        a lease outside the new range is kept until its client asks again (then it is
        refused, like any address outside the range) or it ends; new clients get
        addresses of the new range."""
        if last < first:
            raise ValueError("range end is before its start")
        self.first, self.last = first, last
        self._fresh = first
        self._heap = [(le.expires, le.ip) for le in self.by_ip.values()]
        heapq.heapify(self._heap)

    # -- loading -------------------------------------------------------------
    def load(self, leases: list[Lease]) -> None:
        for lease in leases:
            old = self.by_ip.get(lease.ip)
            if old is not None and old.key and self.by_key.get(old.key) is old:
                del self.by_key[old.key]
            self.by_ip[lease.ip] = lease
            if lease.key and lease.state != DECLINED:
                cur = self.by_key.get(lease.key)
                if cur is None or cur.expires <= lease.expires:
                    self.by_key[lease.key] = lease
            if lease.state == DECLINED:
                self.declined_by.setdefault(lease.mac, set()).add(lease.ip)
        self._heap = [(le.expires, le.ip) for le in self.by_ip.values()]
        heapq.heapify(self._heap)

    def set_reservations(self, by_mac: dict[str, int]) -> None:
        """MAC -> address; addresses must be inside the LAN network."""
        self.reserved_by_mac = {m: ip for m, ip in by_mac.items() if self.in_network(ip)}
        self.reserved_ips = {ip: m for m, ip in self.reserved_by_mac.items()}

    # -- questions -------------------------------------------------------------
    def in_network(self, ip: int) -> bool:
        return (ip & self.mask) == self.network and ip not in (self.network, self.broadcast,
                                                              self.server_ip)

    def in_range(self, ip: int) -> bool:
        return self.first <= ip <= self.last

    def lease_of(self, key: bytes) -> Lease | None:
        return self.by_key.get(key)

    def knows(self, key: bytes, mac: str) -> bool:
        """Whether the server has a record of this client: a lease (in any state) or a
        reservation. RFC 2131 4.3.2: a REQUEST from a client without one gets silence."""
        return key in self.by_key or mac in self.reserved_by_mac

    def declines_held(self, mac: str, now: float) -> int:
        """How many addresses this MAC's DECLINEs hold in quarantine now."""
        ips = self.declined_by.get(mac)
        if not ips:
            return 0
        for ip in [ip for ip in ips if not self._quarantined_by(ip, mac, now)]:
            ips.discard(ip)
        if not ips:
            del self.declined_by[mac]
        return len(ips)

    def _quarantined_by(self, ip: int, mac: str, now: float) -> bool:
        lease = self.by_ip.get(ip)
        return lease is not None and lease.state == DECLINED and lease.mac == mac \
            and lease.expires > now

    def usable_by(self, ip: int, key: bytes, mac: str, now: float) -> bool:
        """May this client have `ip` now?"""
        owner = self.reserved_ips.get(ip)
        if owner is not None:
            if owner != mac:
                return False
        elif not self.in_range(ip) or ip == self.server_ip:
            return False
        lease = self.by_ip.get(ip)
        return lease is None or lease.key == key or lease.expires <= now

    # -- changes ---------------------------------------------------------------
    def _take(self, ip: int, key: bytes) -> Lease | None:
        """Drop a previous owner's claim on `ip`; return the lease if the client owns it."""
        lease = self.by_ip.get(ip)
        if lease is None:
            return None
        if lease.key == key:
            return lease
        if lease.key and self.by_key.get(lease.key) is lease:
            del self.by_key[lease.key]
        return None

    def choose(self, key: bytes, mac: str, requested: int | None, now: float) -> int | None:
        """The address to offer this client, or None when the pool is exhausted."""
        r = self.reserved_by_mac.get(mac)
        if r is not None and self.usable_by(r, key, mac, now):
            return r
        own = self.by_key.get(key)
        if own is not None and self.usable_by(own.ip, key, mac, now):
            return own.ip
        if requested is not None and self.usable_by(requested, key, mac, now):
            return requested
        while self._fresh <= self.last:
            ip = self._fresh
            self._fresh += 1
            if ip not in self.by_ip and ip not in self.reserved_ips and ip != self.server_ip:
                return ip
        heap = self._heap
        while heap:
            expires, ip = heap[0]
            lease = self.by_ip.get(ip)
            if lease is None or lease.expires != expires or ip in self.reserved_ips:
                heapq.heappop(heap)  # stale entry: the lease changed since
                continue
            if expires > now:
                break  # the oldest lease is still running
            heapq.heappop(heap)
            if self.in_range(ip):
                return ip
        return self._reclaim_quarantined(now)

    def _reclaim_quarantined(self, now: float) -> int | None:
        """Nothing else is free: the quarantined address whose quarantine ends first."""
        best = None
        for lease in self.by_ip.values():
            if lease.state == DECLINED and lease.expires > now and self.in_range(lease.ip) \
                    and lease.ip not in self.reserved_ips \
                    and (best is None or lease.expires < best.expires):
                best = lease
        return best.ip if best is not None else None

    def offer(self, key: bytes, mac: str, client_id: bytes | None, requested: int | None,
              now: float) -> Lease | None:
        ip = self.choose(key, mac, requested, now)
        if ip is None:
            return None
        lease = self._take(ip, key)
        if lease is not None and lease.state == BOUND and lease.expires > now:
            return lease  # a bound client asking again keeps its binding
        if lease is None:
            lease = Lease(ip, key, mac, client_id, None, OFFERED, now, now + self.offer_hold)
            self.by_ip[ip] = lease
        else:
            lease.state, lease.starts, lease.expires = OFFERED, now, now + self.offer_hold
            lease.mac, lease.client_id = mac, client_id
        self.by_key[key] = lease
        heapq.heappush(self._heap, (lease.expires, ip))
        return lease

    def bind(self, key: bytes, mac: str, client_id: bytes | None, ip: int, hostname: str | None,
             now: float, seconds: int) -> list[Lease]:
        """Bind `ip` to the client (caller checked `usable_by`). Returns the changed leases."""
        changed = []
        prev = self.by_key.get(key)
        if prev is not None and prev.ip != ip and prev.expires > now:
            prev.state, prev.expires = EXPIRED, now  # the client moved on
            heapq.heappush(self._heap, (now, prev.ip))
            changed.append(prev)
        lease = self._take(ip, key)
        if lease is None:
            lease = Lease(ip, key, mac, client_id, hostname, BOUND, now, now + seconds)
            self.by_ip[ip] = lease
        else:
            if lease.state != BOUND or lease.expires <= now:
                lease.starts = now
            lease.state, lease.expires = BOUND, now + seconds
            lease.mac, lease.client_id = mac, client_id
            if hostname:
                lease.hostname = hostname
        self.by_key[key] = lease
        heapq.heappush(self._heap, (lease.expires, ip))
        changed.append(lease)
        if len(self._heap) > 4 * len(self.by_ip) + 4096:
            self._heap = [(le.expires, le.ip) for le in self.by_ip.values()]
            heapq.heapify(self._heap)
        return changed

    def forget_offer(self, key: bytes, now: float) -> None:
        """The client chose another server: free the address we offered it."""
        lease = self.by_key.get(key)
        if lease is not None and lease.state == OFFERED:
            lease.expires = now
            heapq.heappush(self._heap, (now, lease.ip))

    def release(self, key: bytes, ip: int, now: float) -> Lease | None:
        lease = self.by_ip.get(ip)
        if lease is None or lease.key != key or lease.state != BOUND:
            return None
        lease.state, lease.expires = RELEASED, now
        heapq.heappush(self._heap, (now, ip))
        return lease

    def decline(self, key: bytes, mac: str, ip: int, now: float, quarantine: float, *,
                by_client: bool = True) -> Lease | None:
        """The client found `ip` in use: nobody gets it for `quarantine` seconds (unless
        nothing else is free). Only an address currently offered or leased to this client
        can be declined; anything else returns None and changes nothing. `by_client`:
        the client's own DECLINE (counted in `declines_held`), not the server's ping."""
        lease = self.by_ip.get(ip)
        if lease is None or lease.key != key or lease.state not in (OFFERED, BOUND) \
                or lease.expires <= now:
            return None
        if self.by_key.get(key) is lease:
            del self.by_key[key]
        lease.key, lease.state, lease.starts, lease.expires = b"", DECLINED, now, now + quarantine
        lease.mac = mac
        if by_client:
            self.declined_by.setdefault(mac, set()).add(ip)
        heapq.heappush(self._heap, (lease.expires, ip))
        return lease

    def stats(self, now: float) -> dict[str, int]:
        leases = list(self.by_ip.values())  # one C-level copy: the DHCP thread may be adding
        bound = sum(1 for le in leases if le.state == BOUND and le.expires > now)
        return {"size": self.last - self.first + 1, "bound": bound,
                "reservations": len(self.reserved_by_mac)}
