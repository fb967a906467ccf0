"""What to answer: local zone, cache, forward, or refuse. Plain logic, no sockets.

The hot path is a memo of whole responses keyed by the query's bytes after its
ID: a repeated question from an allowed client costs one dict lookup and one
concatenation. Local answers stay memoised until the zone is swapped; answers
from the forward cache only for the second they were built in (their TTLs count
down every second).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from . import wire
from .cache import ForwardCache
from .zone import LocalZone, build_zone

FORWARD = object()  # sentinel: send the query upstream
MEMO_MAX = 50_000
CLIENTS_MAX = 4096


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
    upstream_mismatched: int = 0  # datagrams on an upstream socket that were not its answer
    upstream_answers: int = 0  # answers taken from an upstream ...
    upstream_ms: int = 0  # ... and the milliseconds they took, summed (the mean latency)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Resolver:
    def __init__(self, zone: LocalZone, clients, upstreams=(), cache: ForwardCache | None = None):
        self.clients = tuple(clients)
        self.upstreams = tuple(upstreams)
        self.cache = cache if cache is not None else ForwardCache()
        self.counters = Counters()
        self._allowed: dict[str, bool] = {}
        self._memo: dict[bytes, bytes] = {}  # local answers, valid for this zone
        self._fmemo: dict[bytes, tuple[int, bytes]] = {}  # cached forwards, valid for one second
        self.zone = zone

    @property
    def zone(self) -> LocalZone:
        return self._zone

    @zone.setter
    def zone(self, zone: LocalZone) -> None:
        self._zone = zone
        self._memo = {}

    @classmethod
    def create(cls, domain: str, network: str, *, clients: Iterable[str] = (),
               upstreams: Iterable[str] = (), network6: str | None = None) -> Resolver:
        """`network` (and `network6`, the LAN's IPv6 prefix) and `clients` may query."""
        nets = tuple(ipaddress.ip_network(c, strict=False)
                     for c in (network, *([network6] if network6 else []), *clients))
        return cls(build_zone(domain, [], network=network, network6=network6), nets,
                   tuple(parse_upstream(u) for u in upstreams))

    def allowed(self, client_ip: str) -> bool:
        hit = self._allowed.get(client_ip)
        if hit is None:
            hit = self._check_client(client_ip)
            if len(self._allowed) >= CLIENTS_MAX:
                self._allowed.clear()
            self._allowed[client_ip] = hit
        return hit

    def _check_client(self, client_ip: str) -> bool:
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
        if type(data) is not bytes:
            data = bytes(data)
        if not tcp:
            tail = data[2:]
            hit = self._memo.get(tail)
            if hit is not None and self.allowed(client_ip):
                c.local += 1
                return data[:2] + hit
            fhit = self._fmemo.get(tail)
            if fhit is not None and fhit[0] == int(now) and self.allowed(client_ip):
                c.cache_hits += 1
                return data[:2] + fhit[1]
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
            ans = self._zone.lookup(q.key, q.qtype)
            if ans is not None:
                c.local += 1
                out = wire.build(q, wire.AA | wire.RA, ans.rcode, ans.answers, ans.ancount,
                                 ans.authority, ans.nscount, limit)
                if out[2] & 0x02:  # TC
                    c.truncated += 1
                if not tcp:
                    if len(self._memo) >= MEMO_MAX:
                        self._memo = {}
                    self._memo[data[2:]] = out[2:]
                return out
        hit = self.cache.get(q, now, limit)
        if hit is not None:
            c.cache_hits += 1
            if hit[2] & 0x02:
                c.truncated += 1
            if not tcp:
                if len(self._fmemo) >= MEMO_MAX:
                    self._fmemo = {}
                self._fmemo[data[2:]] = (int(now), hit[2:])
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
    return host.strip("[]"), int(port)
