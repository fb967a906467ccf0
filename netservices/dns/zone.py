"""The LAN's own names, precompiled: from (name, ip) records to ready answer fragments.

`build_zone` is a plain function over data. The resulting `LocalZone` answers a
(lower-cased wire name, qtype) with an rcode and wire fragments, so the server
does no per-query encoding and no database work.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import wire

_LABEL_JUNK = re.compile(r"[^a-z0-9-]+")


def clean_hostname(name: str) -> str | None:
    """A DHCP/host name as one DNS label: lower-case, [a-z0-9-], 1..63; None if nothing is left."""
    if not isinstance(name, str):
        return None
    label = _LABEL_JUNK.sub("-", name.strip().lower().split(".")[0]).strip("-")[:63].strip("-")
    return label or None


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
        if self.network is None or not key.endswith(b"\x07in-addr\x04arpa\x00"):
            return False
        ip = wire.ip_of_reverse(wire.wire_labels(key))
        return ip is not None and ipaddress.IPv4Address(ip) in self.network


def build_zone(domain: str, records: Iterable[tuple[str, str]], *,
               network: str | ipaddress.IPv4Network | None = None, ttl: int = 60,
               serial: int = 1) -> LocalZone:
    """Precompile A and PTR answers. `records` are (hostname, ipv4); earlier records win
    a reverse name (pass static hosts before leases). Bad names or addresses are skipped."""
    domain_wire = wire.name_to_wire(domain)
    net = ipaddress.IPv4Network(network, strict=False) if network is not None else None
    by_name: dict[bytes, list[bytes]] = {}
    ptr: dict[bytes, bytes] = {}
    kept: list[tuple[str, str]] = []
    for raw_name, raw_ip in records:
        label = clean_hostname(raw_name)
        try:
            packed_ip = socket.inet_aton(str(ipaddress.IPv4Address(raw_ip)))
        except (ValueError, OSError):
            continue
        if label is None:
            continue
        fqdn = bytes([len(label)]) + label.encode() + domain_wire
        if len(fqdn) > 255:
            continue
        ips = by_name.setdefault(fqdn, [])
        if packed_ip not in ips:
            ips.append(packed_ip)
            kept.append((label, str(ipaddress.IPv4Address(raw_ip))))
        rev = wire.name_to_wire(wire.reverse_name(str(ipaddress.IPv4Address(raw_ip))))
        ptr.setdefault(rev, fqdn)

    apex = domain_wire
    hostmaster = b"\x0ahostmaster" + domain_wire
    soa_rdata = apex + hostmaster + struct.pack("!IIIII", serial & 0xFFFFFFFF, 3600, 600, 86400, ttl)
    soa = wire.rr(wire.SOA, ttl, soa_rdata, owner=apex)
    answers: dict[tuple[bytes, int], Answer] = {
        (apex, wire.SOA): Answer(wire.NOERROR, wire.rr(wire.SOA, ttl, soa_rdata), 1),
    }
    for fqdn, ips in by_name.items():
        answers[(fqdn, wire.A)] = Answer(
            wire.NOERROR, b"".join(wire.rr(wire.A, ttl, ip) for ip in ips), len(ips))
    for rev, fqdn in ptr.items():
        answers[(rev, wire.PTR)] = Answer(wire.NOERROR, wire.rr(wire.PTR, ttl, fqdn), 1)
    names = frozenset([apex, *by_name, *ptr])
    return LocalZone(domain_wire, net, answers, names, soa, tuple(kept))
