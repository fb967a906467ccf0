"""Router solicitations and advertisements (RFC 4861 4.1/4.2), with the prefix
information, MTU and source link-layer address options (4.6) and RDNSS/DNSSL
(RFC 8106): bytes in, records out, and back.

Pure. The ICMPv6 checksum is left 0 on encode: the kernel fills it for raw
ICMPv6 sockets (and checks it on receive). Any malformed input raises
`MalformedPacket` and nothing else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

ROUTER_SOLICIT, ROUTER_ADVERT = 133, 134
OPT_SOURCE_LLADDR, OPT_TARGET_LLADDR, OPT_PREFIX_INFO, OPT_MTU = 1, 2, 3, 5
OPT_RDNSS, OPT_DNSSL = 25, 31
FLAG_MANAGED, FLAG_OTHER = 0x80, 0x40
PREFIX_ON_LINK, PREFIX_AUTONOMOUS = 0x80, 0x40
INFINITY = 0xFFFFFFFF


class MalformedPacket(ValueError):
    """The bytes are not a well-formed RS or RA; the reason says why."""


@dataclass(frozen=True, slots=True)
class PrefixInfo:
    prefix: str  # "fd00:1:2:3::/64"
    valid_seconds: int
    preferred_seconds: int
    on_link: bool = True
    autonomous: bool = True


@dataclass(slots=True)
class RouterAdvert:
    router_lifetime: int  # seconds; 0: not a default router (and, at shutdown, stop using me)
    managed: bool = False  # M: addresses from DHCPv6
    other: bool = False  # O: other configuration from DHCPv6
    cur_hop_limit: int = 64
    reachable_ms: int = 0
    retrans_ms: int = 0
    source_mac: bytes | None = None
    mtu: int | None = None
    prefixes: list[PrefixInfo] = field(default_factory=list)
    rdnss: list[str] = field(default_factory=list)
    rdnss_lifetime: int = 0
    dnssl: list[str] = field(default_factory=list)
    dnssl_lifetime: int = 0


@dataclass(slots=True)
class RouterSolicit:
    source_mac: bytes | None = None


def _opt(code: int, body: bytes) -> bytes:
    """An option padded to a multiple of 8 octets, its length in 8-octet units."""
    total = 2 + len(body)
    pad = -total % 8
    return bytes((code, (total + pad) // 8)) + body + bytes(pad)


def encode_domains(names: list[str]) -> bytes:
    out = bytearray()
    for name in names:
        for label in name.strip(".").split("."):
            b = label.encode("idna") if label else b""
            if not b or len(b) > 63:
                raise ValueError(f"bad domain label in {name!r}")
            out += bytes((len(b),)) + b
        out += b"\0"
    return bytes(out)


def decode_domains(v: bytes) -> list[str]:
    """Names in DNS wire format, uncompressed; the zero padding after the last one ends it."""
    names, labels = [], []
    i = 0
    while i < len(v):
        n = v[i]
        if n == 0:
            if labels:
                names.append(".".join(labels))
                labels = []
            i += 1
            continue
        if n > 63 or i + 1 + n > len(v):
            raise MalformedPacket("bad domain name in DNSSL")
        labels.append(v[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if labels:
        raise MalformedPacket("DNSSL name without its terminating zero")
    return names


def encode_ra(ra: RouterAdvert) -> bytes:
    flags = (FLAG_MANAGED if ra.managed else 0) | (FLAG_OTHER if ra.other else 0)
    out = [struct.pack("!BBHBBHII", ROUTER_ADVERT, 0, 0, ra.cur_hop_limit, flags,
                       ra.router_lifetime, ra.reachable_ms, ra.retrans_ms)]
    if ra.source_mac is not None:
        out.append(_opt(OPT_SOURCE_LLADDR, ra.source_mac))
    if ra.mtu:
        out.append(_opt(OPT_MTU, struct.pack("!HI", 0, ra.mtu)))
    for p in ra.prefixes:
        net = ipaddress.IPv6Network(p.prefix, strict=False)
        pflags = (PREFIX_ON_LINK if p.on_link else 0) | (PREFIX_AUTONOMOUS if p.autonomous else 0)
        out.append(_opt(OPT_PREFIX_INFO, struct.pack("!BBIII", net.prefixlen, pflags,
                                                     p.valid_seconds, p.preferred_seconds, 0)
                        + net.network_address.packed))
    if ra.rdnss:
        out.append(_opt(OPT_RDNSS, struct.pack("!HI", 0, ra.rdnss_lifetime) + b"".join(
            ipaddress.IPv6Address(a).packed for a in ra.rdnss)))
    if ra.dnssl:
        out.append(_opt(OPT_DNSSL, struct.pack("!HI", 0, ra.dnssl_lifetime)
                        + encode_domains(ra.dnssl)))
    return b"".join(out)


def _options(data: bytes, start: int) -> list[tuple[int, bytes]]:
    out = []
    i = start
    while i < len(data):
        if i + 2 > len(data):
            raise MalformedPacket("truncated option")
        code, units = data[i], data[i + 1]
        if units == 0:
            raise MalformedPacket(f"option {code} of length 0")  # RFC 4861 4.6: discard
        j = i + units * 8
        if j > len(data):
            raise MalformedPacket(f"option {code} runs past the end")
        out.append((code, data[i + 2 : j]))
        i = j
    return out


def _lladdr(v: bytes) -> bytes:
    return v[:6]


def parse_rs(data: bytes) -> RouterSolicit:
    if len(data) < 8:
        raise MalformedPacket(f"{len(data)} bytes: shorter than a router solicitation")
    if data[0] != ROUTER_SOLICIT or data[1] != 0:
        raise MalformedPacket(f"type {data[0]} code {data[1]} is not a router solicitation")
    rs = RouterSolicit()
    for code, v in _options(data, 8):
        if code == OPT_SOURCE_LLADDR:
            rs.source_mac = _lladdr(v)
    return rs


def parse_ra(data: bytes) -> RouterAdvert:
    if len(data) < 16:
        raise MalformedPacket(f"{len(data)} bytes: shorter than a router advertisement")
    if data[0] != ROUTER_ADVERT or data[1] != 0:
        raise MalformedPacket(f"type {data[0]} code {data[1]} is not a router advertisement")
    hop, flags, life, reach, retrans = struct.unpack_from("!BBHII", data, 4)
    ra = RouterAdvert(life, bool(flags & FLAG_MANAGED), bool(flags & FLAG_OTHER), hop, reach,
                      retrans)
    for code, v in _options(data, 16):
        if code == OPT_SOURCE_LLADDR:
            ra.source_mac = _lladdr(v)
        elif code == OPT_MTU:
            if len(v) < 6:
                raise MalformedPacket("short MTU option")
            ra.mtu = struct.unpack_from("!I", v, 2)[0]
        elif code == OPT_PREFIX_INFO:
            if len(v) != 30:
                raise MalformedPacket("prefix information option is not 32 bytes")
            plen, pflags, valid, pref = struct.unpack_from("!BBII", v)
            if plen > 128:
                raise MalformedPacket(f"prefix length {plen}")
            net = ipaddress.IPv6Network((v[14:30], plen), strict=False)
            ra.prefixes.append(PrefixInfo(str(net), valid, pref, bool(pflags & PREFIX_ON_LINK),
                                          bool(pflags & PREFIX_AUTONOMOUS)))
        elif code == OPT_RDNSS:
            if len(v) < 22 or (len(v) - 6) % 16:
                raise MalformedPacket("RDNSS option of bad length")
            ra.rdnss_lifetime = struct.unpack_from("!I", v, 2)[0]
            ra.rdnss += [str(ipaddress.IPv6Address(v[k : k + 16])) for k in range(6, len(v), 16)]
        elif code == OPT_DNSSL:
            if len(v) < 14:
                raise MalformedPacket("DNSSL option too short")
            ra.dnssl_lifetime = struct.unpack_from("!I", v, 2)[0]
            ra.dnssl += decode_domains(v[6:])
    return ra
