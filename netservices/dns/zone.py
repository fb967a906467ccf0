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
                router_names: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Which (label, ipv4) the LAN zone answers, from the directory's records.

    Registered hosts come first and always keep their names (even one without an
    address: no DHCP client may take it); then the router's own names (with
    `router_ip`) unless a host has that name; then the hostnames DHCP clients sent,
    each given to the first lease that claims it and only if nobody above has it and it
    is not in `RESERVED_LABELS`. A DHCP client cannot add itself to another machine's
    name, nor claim `wpad`. Plain function over data: `build_zone` compiles the result."""
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
    if router_ip:
        for name in router_names:
            label = clean_hostname(name)
            if label is not None and label not in taken:
                taken.add(label)
                out.append((label, router_ip))
    claimed: set[str] = set()
    for r in leases:
        label = clean_hostname(r.name)
        if label is None or not r.ip or label in taken or label in RESERVED_LABELS \
                or label in claimed:
            continue
        claimed.add(label)
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
