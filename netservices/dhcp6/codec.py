"""DHCPv6 wire format (RFC 8415): bytes in, `Message` or `RelayMessage` out, and back.

Pure: no sockets, no clock, no policy. A client/server message is a type, a
24-bit transaction id and options (code and length on two bytes each); a relay
message (RELAY-FORW/RELAY-REPL) carries a hop count, the link and peer
addresses and options, one of which (RELAY_MSG) is the relayed message, itself
possibly a relay message. IA_NA and IAADDR options carry options of their own.

Any malformed input raises `MalformedPacket` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# message types
SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
RECONFIGURE, INFORMATION_REQUEST, RELAY_FORW, RELAY_REPL = 10, 11, 12, 13
MESSAGE_TYPE_NAMES = {SOLICIT: "solicit", ADVERTISE: "advertise", REQUEST: "request",
                      CONFIRM: "confirm", RENEW: "renew", REBIND: "rebind", REPLY: "reply",
                      RELEASE: "release", DECLINE: "decline", RECONFIGURE: "reconfigure",
                      INFORMATION_REQUEST: "information_request", RELAY_FORW: "relay_forw",
                      RELAY_REPL: "relay_repl"}

# option codes
OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_IAADDR = 5
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_RELAY_MSG = 9
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_USER_CLASS = 15
OPT_VENDOR_CLASS = 16
OPT_VENDOR_OPTS = 17
OPT_INTERFACE_ID = 18
OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24
OPT_IA_PD = 25
OPT_INFORMATION_REFRESH_TIME = 32
OPT_CLIENT_FQDN = 39
OPT_BOOTFILE_URL = 59
OPT_BOOTFILE_PARAM = 60
OPT_CLIENT_ARCH_TYPE = 61
OPT_NII = 62
OPT_CLIENT_LINKLAYER_ADDR = 79  # RFC 6939, added by relays

# status codes
SUCCESS, UNSPEC_FAIL, NO_ADDRS_AVAIL, NO_BINDING, NOT_ON_LINK, USE_MULTICAST = range(6)
NO_PREFIX_AVAIL = 6

# DUID types
DUID_LLT, DUID_EN, DUID_LL, DUID_UUID = 1, 2, 3, 4

HOP_COUNT_LIMIT = 8  # relay nesting we unwrap (RFC 8415 allows 8 hops by default)
_OPT = struct.Struct("!HH")


class MalformedPacket(ValueError):
    """The bytes are not a well-formed DHCPv6 message; the reason says why."""


def parse_options(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, bytes]]:
    """(code, value) in wire order; repeated codes stay separate (IA_NA, IAADDR...)."""
    end = len(data) if end is None else end
    out = []
    i = start
    while i < end:
        if i + 4 > end:
            raise MalformedPacket(f"truncated option header at {i}")
        code, ln = _OPT.unpack_from(data, i)
        j = i + 4 + ln
        if j > end:
            raise MalformedPacket(f"option {code} of length {ln} runs past the end")
        out.append((code, data[i + 4 : j]))
        i = j
    return out


def option(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"option {code} too long ({len(value)} bytes)")
    return _OPT.pack(code, len(value)) + value


@dataclass(slots=True)
class IaAddress:
    address: bytes  # 16 raw bytes
    preferred: int
    valid: int
    options: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class IaNa:
    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: list[IaAddress] = field(default_factory=list)
    status: tuple[int, str] | None = None


def parse_ia_na(value: bytes) -> IaNa:
    if len(value) < 12:
        raise MalformedPacket("IA_NA shorter than 12 bytes")
    iaid, t1, t2 = struct.unpack_from("!III", value)
    ia = IaNa(iaid, t1, t2)
    for code, v in parse_options(value, 12):
        if code == OPT_IAADDR:
            if len(v) < 24:
                raise MalformedPacket("IAADDR shorter than 24 bytes")
            pref, valid = struct.unpack_from("!II", v, 16)
            ia.addresses.append(IaAddress(v[:16], pref, valid, parse_options(v, 24)))
        elif code == OPT_STATUS_CODE:
            ia.status = parse_status(v)
    return ia


def parse_status(v: bytes) -> tuple[int, str]:
    if len(v) < 2:
        raise MalformedPacket("status code shorter than 2 bytes")
    return struct.unpack_from("!H", v)[0], v[2:].decode("utf-8", "replace")


def encode_status(code: int, message: str = "") -> bytes:
    return option(OPT_STATUS_CODE, struct.pack("!H", code) + message.encode())


def encode_iaaddr(address: bytes, preferred: int, valid: int, extra: bytes = b"") -> bytes:
    return option(OPT_IAADDR, address + struct.pack("!II", preferred, valid) + extra)


def encode_ia_na(iaid: int, t1: int, t2: int, body: bytes) -> bytes:
    return option(OPT_IA_NA, struct.pack("!III", iaid, t1, t2) + body)


def parse_classes(v: bytes, start: int = 0) -> list[bytes]:
    """USER_CLASS data (and VENDOR_CLASS after its enterprise number): length-prefixed items."""
    out = []
    i = start
    while i < len(v):
        if i + 2 > len(v):
            raise MalformedPacket("truncated class item")
        n = struct.unpack_from("!H", v, i)[0]
        if i + 2 + n > len(v):
            raise MalformedPacket("class item runs past the option")
        out.append(v[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def encode_classes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("!H", len(x)) + x for x in items)


def encode_domains(names: list[str]) -> bytes:
    """RFC 1035 wire format, uncompressed (DOMAIN_LIST, RA DNSSL)."""
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
    names, labels = [], []
    i = 0
    while i < len(v):
        n = v[i]
        if n == 0:
            names.append(".".join(labels))
            labels = []
            i += 1
            continue
        if n > 63 or i + 1 + n > len(v):
            raise MalformedPacket("bad domain name")
        labels.append(v[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if labels:
        raise MalformedPacket("domain name without its terminating zero")
    return names


def mac_from_duid(duid: bytes) -> bytes | None:
    """The link-layer address DUID-LLT and DUID-LL carry for Ethernet (hardware type 1)."""
    if len(duid) == 14 and duid[:4] == b"\x00\x01\x00\x01":
        return duid[8:14]
    if len(duid) == 10 and duid[:4] == b"\x00\x03\x00\x01":
        return duid[4:10]
    return None


_LINK_LOCAL_PREFIX = b"\xfe\x80" + bytes(6)


def mac_of_eui64(addr: bytes) -> bytes | None:
    """The MAC a 16-byte IPv6 address's modified EUI-64 interface identifier was made
    from (any prefix: link-local, or SLAAC on the LAN's /64), if it is one."""
    if len(addr) == 16 and addr[11:13] == b"\xff\xfe":
        return bytes((addr[8] ^ 0x02,)) + addr[9:11] + addr[13:16]
    return None


def mac_from_link_local(addr: bytes) -> bytes | None:
    """The MAC in a modified EUI-64 link-local address (fe80::xxff:fexx:xxxx), if any."""
    return mac_of_eui64(addr) if addr[:8] == _LINK_LOCAL_PREFIX else None


def duid_ll(mac: bytes) -> bytes:
    return b"\x00\x03\x00\x01" + mac


@dataclass(slots=True)
class Message:
    """A client/server message. `options` keeps every (code, value) in order;
    the properties decode the ones the server reads."""

    msg_type: int
    xid: bytes  # 3 bytes
    options: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, code: int) -> bytes | None:
        for c, v in self.options:
            if c == code:
                return v
        return None

    def has(self, code: int) -> bool:
        for c, _ in self.options:
            if c == code:
                return True
        return False

    def has_any(self, codes: frozenset[int]) -> bool:
        """Whether one of `codes` is present (one pass over the options)."""
        for c, _ in self.options:
            if c in codes:
                return True
        return False

    @property
    def client_id(self) -> bytes | None:
        return self.get(OPT_CLIENTID)

    @property
    def server_id(self) -> bytes | None:
        return self.get(OPT_SERVERID)

    @property
    def ia_nas(self) -> list[IaNa]:
        return [parse_ia_na(v) for c, v in self.options if c == OPT_IA_NA]

    @property
    def oro(self) -> list[int]:
        v = self.get(OPT_ORO) or b""
        if len(v) % 2:
            raise MalformedPacket("ORO of odd length")
        return list(struct.unpack(f"!{len(v) // 2}H", v))

    @property
    def user_classes(self) -> list[bytes]:
        return [x for c, v in self.options if c == OPT_USER_CLASS for x in parse_classes(v)]

    @property
    def vendor_classes(self) -> list[bytes]:
        out = []
        for c, v in self.options:
            if c == OPT_VENDOR_CLASS:
                if len(v) < 4:
                    raise MalformedPacket("vendor class shorter than its enterprise number")
                out += parse_classes(v, 4)
        return out

    @property
    def client_arches(self) -> list[int]:
        v = self.get(OPT_CLIENT_ARCH_TYPE)
        if v is None:
            return []
        if len(v) % 2 or not v:
            raise MalformedPacket("client architecture option of bad length")
        return list(struct.unpack(f"!{len(v) // 2}H", v))

    @property
    def fqdn(self) -> str | None:
        v = self.get(OPT_CLIENT_FQDN)
        if not v or len(v) < 2:
            return None
        try:
            names = decode_domains(v[1:] + (b"" if v.endswith(b"\0") else b"\0"))
        except MalformedPacket:
            return None
        return names[0].split(".")[0] or None if names else None

    def encode(self) -> bytes:
        return bytes((self.msg_type,)) + self.xid + b"".join(option(c, v) for c, v in self.options)


@dataclass(slots=True)
class RelayMessage:
    msg_type: int  # RELAY_FORW | RELAY_REPL
    hop_count: int
    link_address: bytes
    peer_address: bytes
    options: list[tuple[int, bytes]] = field(default_factory=list)
    inner: Message | RelayMessage | None = None

    def get(self, code: int) -> bytes | None:
        for c, v in self.options:
            if c == code:
                return v
        return None

    def encode(self) -> bytes:
        return (bytes((self.msg_type, self.hop_count)) + self.link_address + self.peer_address
                + b"".join(option(c, v) for c, v in self.options))


def parse(data: bytes, depth: int = 0) -> Message | RelayMessage:
    if len(data) < 4:
        raise MalformedPacket(f"{len(data)} bytes: shorter than a DHCPv6 header")
    mt = data[0]
    if mt in (RELAY_FORW, RELAY_REPL):
        if len(data) < 34:
            raise MalformedPacket("relay message shorter than 34 bytes")
        if depth >= HOP_COUNT_LIMIT:
            raise MalformedPacket("relay messages nested too deep")
        rm = RelayMessage(mt, data[1], data[2:18], data[18:34], parse_options(data, 34))
        inner = rm.get(OPT_RELAY_MSG)
        if inner is None:
            raise MalformedPacket("relay message without RELAY_MSG")
        rm.inner = parse(inner, depth + 1)
        return rm
    if mt == 0 or mt > RELAY_REPL:
        raise MalformedPacket(f"unknown message type {mt}")
    return Message(mt, data[1:4], parse_options(data, 4))
