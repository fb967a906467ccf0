"""The LAN's own names, precompiled: from (name, ip) records to ready answer fragments.

`build_zone` is a plain function over data. The resulting `LocalZone` answers a
(lower-cased wire name, qtype) with an rcode and wire fragments, so the server
does no per-query encoding and no database work.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..backend import NameRecord
from . import wire

_LABEL_JUNK = re.compile(r"[^a-z0-9-]+")
# Names a DHCP client never gets (RFC 6761 localhost; the proxy and IPv6-transition
# auto-discovery names clients look up and would then trust; loopback aliases)
RESERVED_LABELS = frozenset({
    "localhost", "localdomain", "broadcasthost", "ip6-localhost", "ip6-loopback",
    "wpad", "isatap", "local",
})


def clean_hostname(name: str) -> str | None:
    """A DHCP/host name as one DNS label: lower-case, [a-z0-9-], 1..63; None if nothing is left."""
    if not isinstance(name, str):
        return None
    label = _LABEL_JUNK.sub("-", name.strip().lower().split(".")[0]).strip("-")[:63].strip("-")
    return label or None


def lan_records(records: Iterable[NameRecord | tuple], *, router_ip: str | None = None,
                router_names: Iterable[str] = (), router_ip6: str | None = None
                ) -> list[tuple[str, str]]:
    """Which (label, ip) the LAN zone answers, from the directory's records (IPv4 for A,
    IPv6 for AAAA; a host's or the router's name may have both).

    Registered hosts come first and always keep their names (even one without an
    address: no DHCP client may take it); then the router's own names (with
    `router_ip`) unless a host has that name; then the hostnames DHCP clients sent,
    each given to the first lease that claims it and only if nobody above has it and it
    is not in `RESERVED_LABELS` (the same client's, `owner`, IPv4 and IPv6 leases share
    it). A DHCP client cannot add itself to another machine's name, nor claim `wpad`.
    Plain function over data: `build_zone` compiles the result."""
    taken: set[str] = set()
    out: list[tuple[str, str]] = []
    leases: list[NameRecord] = []
    for rec in records:
        r = NameRecord(*rec)
        if r.source != "host":
            leases.append(r)
            continue
        label = clean_hostname(r.name)
        if label is None:
            continue
        taken.add(label)
        if r.ip:
            out.append((label, r.ip))
    router_ips = [ip for ip in (router_ip, router_ip6) if ip]
    if router_ips:
        for name in router_names:
            label = clean_hostname(name)
            if label is not None and label not in taken:
                taken.add(label)
                out.extend((label, ip) for ip in router_ips)
    claimed: dict[str, str | None] = {}  # label -> the lease owner that has it
    for r in leases:
        label = clean_hostname(r.name)
        if label is None or not r.ip or label in taken or label in RESERVED_LABELS:
            continue
        if label in claimed and (r.owner is None or claimed[label] != r.owner):
            continue
        claimed.setdefault(label, r.owner)
        out.append((label, r.ip))
    return out


@dataclass(frozen=True)
class Answer:
    rcode: int
    answers: bytes = b""
    ancount: int = 0
    authority: bytes = b""
    nscount: int = 0


@dataclass
class LocalZone:
    """Answers for `domain` and for the reverse names of `network`."""

    domain_wire: bytes
    network: ipaddress.IPv4Network | None
    answers: dict[tuple[bytes, int], Answer] = field(default_factory=dict)
    names: frozenset[bytes] = frozenset()
    soa: bytes = b""  # the SOA record (owner: the apex, uncompressed) for negative answers
    records: tuple[tuple[str, str], ...] = ()  # what it was built from
    network6: ipaddress.IPv6Network | None = None  # the LAN's IPv6 prefix: its ip6.arpa names

    def lookup(self, key: bytes, qtype: int) -> Answer | None:
        """The answer if the name is ours, None if it should be forwarded."""
        hit = self.answers.get((key, qtype))
        if hit is not None:
            return hit
        return self._negative(key, qtype)

    def _negative(self, key: bytes, qtype: int) -> Answer | None:
        if key in self.names:  # the name exists, not with this type
            return Answer(wire.NOERROR, authority=self.soa, nscount=1)
        if self.in_domain(key) or self.in_reverse(key):
            return Answer(wire.NXDOMAIN, authority=self.soa, nscount=1)
        return None

    def in_domain(self, key: bytes) -> bool:
        if not key.endswith(self.domain_wire):
            return False
        # the suffix must start on a label boundary
        cut = len(key) - len(self.domain_wire)
        i = 0
        while i < cut:
            i += key[i] + 1
        return i == cut

    def in_reverse(self, key: bytes) -> bool:
        if key.endswith(b"\x03ip6\x04arpa\x00"):
            if self.network6 is None:
                return False
            ip6 = wire.address6_of_reverse(wire.wire_labels(key))
            return ip6 is not None and ip6 in self.network6
        if self.network is None or not key.endswith(b"\x07in-addr\x04arpa\x00"):
            return False
        ip = wire.ip_of_reverse(wire.wire_labels(key))
        return ip is not None and ipaddress.IPv4Address(ip) in self.network


def build_zone(domain: str, records: Iterable[tuple[str, str]], *,
               network: str | ipaddress.IPv4Network | None = None, ttl: int = 60,
               serial: int = 1, network6: str | ipaddress.IPv6Network | None = None
               ) -> LocalZone:
    """Precompile A, AAAA and PTR answers. `records` are (hostname, ipv4 or ipv6); earlier
    records win a reverse name (pass static hosts before leases). Bad names or addresses
    are skipped. `network6`: the IPv6 prefix whose ip6.arpa names are ours."""
    domain_wire = wire.name_to_wire(domain)
    net = ipaddress.IPv4Network(network, strict=False) if network is not None else None
    net6 = ipaddress.IPv6Network(network6, strict=False) if network6 is not None else None
    by_name: dict[tuple[bytes, int], list[bytes]] = {}
    ptr: dict[bytes, bytes] = {}
    kept: list[tuple[str, str]] = []
    for raw_name, raw_ip in records:
        label = clean_hostname(raw_name)
        try:
            ip = ipaddress.ip_address(raw_ip)
        except (ValueError, TypeError):
            continue
        if label is None:
            continue
        fqdn = bytes([len(label)]) + label.encode() + domain_wire
        if len(fqdn) > 255:
            continue
        ips = by_name.setdefault((fqdn, wire.A if ip.version == 4 else wire.AAAA), [])
        if ip.packed not in ips:
            ips.append(ip.packed)
            kept.append((label, str(ip)))
        ptr.setdefault(wire.name_to_wire(wire.reverse_name(str(ip))), fqdn)

    apex = domain_wire
    hostmaster = b"\x0ahostmaster" + domain_wire
    soa_rdata = apex + hostmaster + struct.pack("!IIIII", serial & 0xFFFFFFFF, 3600, 600, 86400, ttl)
    soa = wire.rr(wire.SOA, ttl, soa_rdata, owner=apex)
    answers: dict[tuple[bytes, int], Answer] = {
        (apex, wire.SOA): Answer(wire.NOERROR, wire.rr(wire.SOA, ttl, soa_rdata), 1),
    }
    for (fqdn, rtype), ips in by_name.items():
        answers[(fqdn, rtype)] = Answer(
            wire.NOERROR, b"".join(wire.rr(rtype, ttl, ip) for ip in ips), len(ips))
    for rev, fqdn in ptr.items():
        answers[(rev, wire.PTR)] = Answer(wire.NOERROR, wire.rr(wire.PTR, ttl, fqdn), 1)
    names = frozenset([apex, *(fqdn for fqdn, _ in by_name), *ptr])
    return LocalZone(domain_wire, net, answers, names, soa, tuple(kept), net6)
