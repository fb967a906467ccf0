"""DHCPv4 wire format (RFC 2131/2132): bytes in, `Packet` out, and back.

Pure: no sockets, no clock, no policy. Handles option overload (52, the
`file` and `sname` fields carrying options), long options split across
several instances (RFC 3396, concatenated on parse and split on build), the
relay agent information option (82, RFC 3046), the client identifier (61)
and the PXE options of RFC 4578 (93 arch, 94 NDI, 97 UUID).

Any malformed input raises `MalformedPacket` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# message types (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_TYPE_NAMES = {DISCOVER: "discover", OFFER: "offer", REQUEST: "request",
                      DECLINE: "decline", ACK: "ack", NAK: "nak", RELEASE: "release",
                      INFORM: "inform"}

BOOTREQUEST, BOOTREPLY = 1, 2
MAGIC = b"\x63\x82\x53\x63"
HEADER_LEN = 236
MIN_PACKET = 300  # BOOTP minimum; replies are padded to it
BROADCAST_FLAG = 0x8000

# option codes used by name elsewhere
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_TFTP_SERVER = 66
OPT_BOOTFILE = 67
OPT_USER_CLASS = 77
OPT_RELAY_AGENT = 82
OPT_CLIENT_ARCH = 93
OPT_CLIENT_NDI = 94
OPT_CLIENT_UUID = 97
OPT_VENDOR_SPECIFIC = 43
OPT_IPXE_ENCAP = 175

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
assert _HEADER.size == HEADER_LEN


class MalformedPacket(ValueError):
    """The bytes are not a well-formed DHCPv4 packet; the reason says why."""


@dataclass(slots=True)
class Packet:
    """One DHCP/BOOTP message. Addresses are 4 raw bytes; `options` maps code to
    the (concatenated) value, in the order first seen."""

    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = b"\0\0\0\0"
    yiaddr: bytes = b"\0\0\0\0"
    siaddr: bytes = b"\0\0\0\0"
    giaddr: bytes = b"\0\0\0\0"
    chaddr: bytes = b"\0" * 16
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    # -- convenient views -------------------------------------------------
    @property
    def mac(self) -> bytes:
        """The hardware address (chaddr cut to hlen)."""
        return self.chaddr[: min(self.hlen, 16)]

    @property
    def mac_str(self) -> str:
        return self.chaddr[: min(self.hlen, 16)].hex(":")

    @property
    def message_type(self) -> int | None:
        v = self.options.get(OPT_MESSAGE_TYPE)
        return v[0] if v and len(v) == 1 else None

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    def ip_option(self, code: int) -> bytes | None:
        v = self.options.get(code)
        return v if v is not None and len(v) == 4 else None

    @property
    def requested_ip(self) -> bytes | None:
        return self.ip_option(OPT_REQUESTED_IP)

    @property
    def server_id(self) -> bytes | None:
        return self.ip_option(OPT_SERVER_ID)

    @property
    def client_id(self) -> bytes | None:
        v = self.options.get(OPT_CLIENT_ID)
        return v if v else None

    @property
    def hostname(self) -> str | None:
        v = self.options.get(OPT_HOSTNAME)
        if not v:
            return None
        return v.rstrip(b"\0").decode("ascii", "replace") or None

    @property
    def vendor_class(self) -> bytes:
        return self.options.get(OPT_VENDOR_CLASS, b"")

    @property
    def client_arch(self) -> int | None:
        """The first architecture of option 93 (RFC 4578), if well formed."""
        v = self.options.get(OPT_CLIENT_ARCH)
        if not v or len(v) % 2:
            return None
        return (v[0] << 8) | v[1]

    @property
    def user_classes(self) -> list[bytes]:
        """Option 77 as RFC 3004 items; a value that is not in that form (iPXE
        and many firmwares send the bare string) is one item."""
        v = self.options.get(OPT_USER_CLASS)
        if not v:
            return []
        items, i = [], 0
        while i < len(v):
            n = v[i]
            if n == 0 or i + 1 + n > len(v):
                return [v]
            items.append(v[i + 1 : i + 1 + n])
            i += 1 + n
        return items

    @property
    def uuid(self) -> bytes | None:
        v = self.options.get(OPT_CLIENT_UUID)
        return v[1:] if v and len(v) == 17 and v[0] == 0 else None

    @property
    def relay_agent_info(self) -> dict[int, bytes] | None:
        v = self.options.get(OPT_RELAY_AGENT)
        return None if v is None else parse_suboptions(v)


def _parse_options_into(buf: bytes, start: int, end: int, out: dict[int, bytes],
                        where: str) -> None:
    i = start
    while i < end:
        code = buf[i]
        if code == OPT_END:
            return
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= end:
            raise MalformedPacket(f"option {code} in {where} has no length byte")
        n = buf[i + 1]
        j = i + 2 + n
        if j > end:
            raise MalformedPacket(f"option {code} in {where} runs past the end ({n} bytes)")
        value = buf[i + 2 : j]
        prev = out.get(code)
        out[code] = value if prev is None else prev + value  # RFC 3396
        i = j


def parse(data: bytes) -> Packet:
    """Parse one DHCPv4 message. Raises MalformedPacket."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedPacket("not bytes")
        data = bytes(data)
    if len(data) < HEADER_LEN + 4:
        raise MalformedPacket(f"too short ({len(data)} bytes, need at least {HEADER_LEN + 4})")
    if data[HEADER_LEN : HEADER_LEN + 4] != MAGIC:
        raise MalformedPacket("no DHCP magic cookie")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
     sname, file) = _HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise MalformedPacket(f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
    if hlen > 16:
        raise MalformedPacket(f"hardware address length {hlen} is over 16")
    options: dict[int, bytes] = {}
    _parse_options_into(data, HEADER_LEN + 4, len(data), options, "options")
    overload = options.get(OPT_OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise MalformedPacket(f"option overload has a bad value {overload.hex()}")
        # RFC 3396: options field, then file, then sname
        if overload[0] & 1:
            _parse_options_into(file, 0, len(file), options, "file")
            file = b""
        if overload[0] & 2:
            _parse_options_into(sname, 0, len(sname), options, "sname")
            sname = b""
        if options[OPT_OVERLOAD] != overload:
            raise MalformedPacket("option overload inside an overloaded field")
    return Packet(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
                  chaddr, sname.rstrip(b"\0"), file.rstrip(b"\0"), options)


def parse_suboptions(value: bytes, pad_end: bool = False) -> dict[int, bytes]:
    """Code/length/value sub-options: relay agent info (82) has no pad/end codes;
    PXE vendor options (43) do (`pad_end=True`)."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(value):
        code = value[i]
        if pad_end and code == OPT_END:
            break
        if pad_end and code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(value):
            raise MalformedPacket(f"sub-option {code} has no length byte")
        n = value[i + 1]
        if i + 2 + n > len(value):
            raise MalformedPacket(f"sub-option {code} runs past the end")
        out[code] = out.get(code, b"") + value[i + 2 : i + 2 + n]
        i += 2 + n
    return out


def encode_option(code: int, value: bytes) -> bytes:
    """One option, split into several instances when longer than 255 (RFC 3396)."""
    if not value:
        return bytes((code, 0))
    parts = []
    for k in range(0, len(value), 255):
        chunk = value[k : k + 255]
        parts.append(bytes((code, len(chunk))) + chunk)
    return b"".join(parts)


def encode_options(options: dict[int, bytes]) -> bytes:
    """Options without the END marker, message type first."""
    out = []
    mt = options.get(OPT_MESSAGE_TYPE)
    if mt is not None:
        out.append(encode_option(OPT_MESSAGE_TYPE, mt))
    for code, value in options.items():
        if code in (OPT_MESSAGE_TYPE, OPT_PAD, OPT_END):
            continue
        out.append(encode_option(code, value))
    return b"".join(out)


def encode_suboptions(sub: dict[int, bytes]) -> bytes:
    return b"".join(bytes((c, len(v))) + v for c, v in sub.items())


def _fixed(value: bytes, size: int, name: str) -> bytes:
    if len(value) > size:
        raise ValueError(f"{name} is {len(value)} bytes, the field holds {size}")
    return value.ljust(size, b"\0")


def encode_header(op: int, xid: int, flags: int, ciaddr: bytes, yiaddr: bytes, siaddr: bytes,
                  giaddr: bytes, chaddr: bytes, sname: bytes = b"", file: bytes = b"",
                  htype: int = 1, hlen: int = 6, hops: int = 0, secs: int = 0) -> bytes:
    """The fixed 236-byte header plus the magic cookie."""
    _fixed(chaddr, 16, "chaddr")
    _fixed(sname, 64, "sname")
    _fixed(file, 128, "file")
    return _HEADER.pack(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
                        chaddr, sname, file) + MAGIC  # struct pads the fixed fields with zeros


def pack_reply_header(xid: int, flags: int, ciaddr: bytes, yiaddr: bytes, siaddr: bytes,
                      giaddr: bytes, chaddr: bytes, file: bytes, htype: int, hlen: int,
                      _pack=_HEADER.pack) -> bytes:
    """Hot-path BOOTREPLY header; the fields come from a parsed request (chaddr is
    16 bytes) and from the server (file under 128 bytes), so nothing is checked."""
    return _pack(BOOTREPLY, htype, hlen, 0, xid, 0, flags, ciaddr, yiaddr, siaddr, giaddr,
                 chaddr, b"", file) + MAGIC


def finish(header_and_options: bytes) -> bytes:
    """Append END and pad to the BOOTP minimum size."""
    b = header_and_options + b"\xff"
    return b if len(b) >= MIN_PACKET else b + bytes(MIN_PACKET - len(b))


def build(p: Packet) -> bytes:
    """Serialise a Packet (no overload: all options go in the options field)."""
    return finish(encode_header(p.op, p.xid, p.flags, p.ciaddr, p.yiaddr, p.siaddr, p.giaddr,
                                p.chaddr, p.sname, p.file, p.htype, p.hlen, p.hops, p.secs)
                  + encode_options(p.options))


# -- small value helpers --------------------------------------------------------

def ip_bytes(text: str) -> bytes:
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(f"{text!r} is not an IPv4 address")
    return bytes(int(x) for x in parts)


def ip_str(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def u32(v: int) -> bytes:
    return struct.pack("!I", v)
