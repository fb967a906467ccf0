"""What to answer: local zone, cache, forward, or refuse. Plain logic, no sockets."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import wire
from .cache import ForwardCache
from .zone import LocalZone, build_zone

FORWARD = object()  # sentinel: send the query upstream


@dataclass
class Counters:
    queries: int = 0
    local: int = 0
    cache_hits: int = 0
    forwarded: int = 0
    refused: int = 0
    malformed: int = 0
    notimp: int = 0
    truncated: int = 0
    upstream_timeouts: int = 0
    upstream_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Resolver:
    zone: LocalZone
    clients: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    upstreams: tuple[tuple[str, int], ...] = ()
    cache: ForwardCache = field(default_factory=ForwardCache)
    counters: Counters = field(default_factory=Counters)

    @classmethod
    def create(cls, domain: str, network: str, *, clients: Iterable[str] = (),
               upstreams: Iterable[str] = ()) -> Resolver:
        nets = tuple(ipaddress.ip_network(c, strict=False) for c in (network, *clients))
        return cls(build_zone(domain, [], network=network), nets,
                   tuple(parse_upstream(u) for u in upstreams))

    def allowed(self, client_ip: str) -> bool:
        try:
            ip = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        if ip.is_loopback:
            return True
        return any(ip in net for net in self.clients if net.version == ip.version)

    def handle(self, data: bytes, client_ip: str, now: float, *, tcp: bool = False):
        """Response bytes, None (drop), or (FORWARD, query)."""
        c = self.counters
        c.queries += 1
        try:
            q = wire.parse_query(data)
        except wire.Malformed:
            c.malformed += 1
            return None
        if q.opcode != 0:
            c.notimp += 1
            return wire.error(q, wire.NOTIMP)
        if not self.allowed(client_ip):
            c.refused += 1
            return wire.error(q, wire.REFUSED, ra=False)
        limit = None if tcp else q.udp_limit()
        if q.qclass == wire.CLASS_IN:
            ans = self.zone.lookup(q.key, q.qtype)
            if ans is not None:
                c.local += 1
                out = wire.build(q, wire.AA | wire.RA, ans.rcode, ans.answers, ans.ancount,
                                 ans.authority, ans.nscount, limit)
                if out[2] & 0x02:  # TC
                    c.truncated += 1
                return out
        hit = self.cache.get(q, now, limit)
        if hit is not None:
            c.cache_hits += 1
            if hit[2] & 0x02:
                c.truncated += 1
            return hit
        if not self.upstreams:
            c.refused += 1
            return wire.error(q, wire.REFUSED)
        c.forwarded += 1
        return (FORWARD, q)


def parse_upstream(text: str) -> tuple[str, int]:
    host, port = text, 53
    if text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    return host.strip("[]"), port
