"""DNS wire format for the LAN resolver: a pure query parser and response builders.

Queries are parsed by hand (header, one question, EDNS OPT in the additional
section) so the hot path is a few slices and one dict lookup. Anything that is
not a well-formed query raises `Malformed`; the server counts and drops it.
Answers are assembled from precompiled fragments whose owner names point back
at the question (offset 12), so the client's spelling of the name is echoed.
"""

from __future__ import annotations

import ipaddress
import struct

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength

QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
A, NS, SOA, PTR, AAAA, OPT, ANY = 1, 2, 6, 12, 28, 41, 255
CLASS_IN = 1
UDP_PLAIN_LIMIT = 512
UDP_MAX_LIMIT = 4096
NAME_POINTER_TO_QUESTION = b"\xc0\x0c"


class Malformed(ValueError):
    """Not a DNS query this server can read: count it and drop it."""


class Query:
    """A parsed query (a plain slotted class: built once per query, so kept cheap)."""

    __slots__ = ("id", "flags", "opcode", "question", "key", "qtype", "qclass", "edns_size")

    def __init__(self, id: int, flags: int, opcode: int, question: bytes, key: bytes, qtype: int,
                 qclass: int, edns_size: int | None):
        self.id = id
        self.flags = flags
        self.opcode = opcode
        self.question = question  # name + qtype + qclass, exactly as the client sent it
        self.key = key  # the name in wire form, lower-cased
        self.qtype = qtype
        self.qclass = qclass
        self.edns_size = edns_size  # the client's UDP payload size, None without EDNS

    @property
    def rd(self) -> int:
        return self.flags & RD

    def udp_limit(self) -> int:
        if self.edns_size is None:
            return UDP_PLAIN_LIMIT
        return max(UDP_PLAIN_LIMIT, min(self.edns_size, UDP_MAX_LIMIT))


def skip_name(data: bytes, i: int) -> int:
    """Offset just past a (possibly compressed) name starting at i."""
    n = len(data)
    total = 0
    while True:
        if i >= n:
            raise Malformed("name runs past the end")
        length = data[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            if i + 2 > n:
                raise Malformed("truncated name pointer")
            return i + 2
        if length & 0xC0:
            raise Malformed("reserved label type")
        total += length + 1
        if total > 255:
            raise Malformed("name longer than 255 bytes")
        i += length + 1


def parse_query(data: bytes) -> Query:
    """One DNS query (QR=0, one question). Raises Malformed."""
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 17:
        raise Malformed("shorter than a header and a question")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        raise Malformed("a response, not a query")
    if qdcount != 1:
        raise Malformed(f"{qdcount} questions")
    i = 12
    while True:
        if i >= n:
            raise Malformed("question name runs past the end")
        length = data[i]
        if length == 0:
            i += 1
            break
        if length > 63:
            raise Malformed("compressed or oversized label in the question")
        i += length + 1
    if i - 12 > 255:
        raise Malformed("question name longer than 255 bytes")
    if i + 4 > n:
        raise Malformed("question runs past the end")
    qtype, qclass = struct.unpack_from("!HH", data, i)
    end = i + 4
    edns_size = None
    # skip answer/authority records (none expected, but legal), read OPT
    for index in range(ancount + nscount + arcount):
        j = skip_name(data, end)
        if j + 10 > n:
            raise Malformed("record runs past the end")
        rtype, rclass, _ttl, rdlen = RR_FIXED.unpack_from(data, j)
        end = j + 10 + rdlen
        if end > n:
            raise Malformed("record data runs past the end")
        if rtype == OPT:
            if index < ancount + nscount or edns_size is not None:
                raise Malformed("misplaced or repeated OPT record")
            edns_size = rclass
    return Query(qid, flags, (flags >> 11) & 0xF, data[12:i + 4], data[12:i].lower(),
                 qtype, qclass, edns_size)


def opt_record(size: int = UDP_MAX_LIMIT) -> bytes:
    """An EDNS OPT pseudo-record with no options."""
    return b"\x00" + RR_FIXED.pack(OPT, size, 0, 0)


def build(query: Query, flags: int, rcode: int, answers: bytes = b"", ancount: int = 0,
          authority: bytes = b"", nscount: int = 0, limit: int | None = None) -> bytes:
    """A response to `query` from answer fragments; truncated (TC, no records) past `limit`."""
    flags = QR | flags | (query.flags & RD) | rcode
    opt = opt_record() if query.edns_size is not None else b""
    arcount = 1 if opt else 0
    out = b"".join((HEADER.pack(query.id, flags, 1, ancount, nscount, arcount), query.question,
                    answers, authority, opt))
    if limit is not None and len(out) > limit:
        return truncated(query, flags)
    return out


def truncated(query: Query, flags: int) -> bytes:
    opt = opt_record() if query.edns_size is not None else b""
    return HEADER.pack(query.id, flags | TC, 1, 0, 0, 1 if opt else 0) + query.question + opt


def error(query: Query, rcode: int, *, ra: bool = True) -> bytes:
    return build(query, RA if ra else 0, rcode)


def error_for_raw(data: bytes, rcode: int) -> bytes | None:
    """A header-only error (FORMERR/NOTIMP) for a packet whose header is readable."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    if flags & QR:
        return None
    return HEADER.pack(qid, QR | (flags & (RD | 0x7800)) | rcode, 0, 0, 0, 0)


# ------------------------------------------------------------------ names


def name_to_wire(name: str) -> bytes:
    """'Node1.Lan.' -> b'\\x05node1\\x03lan\\x00' (lower-cased). Raises ValueError."""
    labels = [x for x in name.strip(".").lower().split(".") if x != ""] if name.strip(".") else []
    out = bytearray()
    for label in labels:
        raw = label.encode("ascii")
        if not 0 < len(raw) <= 63:
            raise ValueError(f"bad label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


def wire_labels(wire: bytes) -> list[bytes]:
    """Labels of an uncompressed wire name (as parse_query checked it)."""
    labels, i = [], 0
    while wire[i]:
        labels.append(wire[i + 1:i + 1 + wire[i]])
        i += wire[i] + 1
    return labels


def reverse_name(ip: str) -> str:
    """'10.77.0.5' -> '5.0.77.10.in-addr.arpa'; an IPv6 address -> its 32 nibbles under ip6.arpa."""
    return ipaddress.ip_address(ip).reverse_pointer


_HEX = frozenset(b"0123456789abcdef")


def address6_of_reverse(labels: list[bytes]) -> ipaddress.IPv6Address | None:
    """The 32 nibble labels under ip6.arpa (lower-cased wire) -> the IPv6 address, or None."""
    if len(labels) != 34 or labels[32:] != [b"ip6", b"arpa"]:
        return None
    if not all(len(x) == 1 and x[0] in _HEX for x in labels[:32]):
        return None
    return ipaddress.IPv6Address(int(b"".join(reversed(labels[:32])), 16))


def ip_of_reverse(labels: list[bytes]) -> str | None:
    """[b'5', b'0', b'77', b'10', b'in-addr', b'arpa'] -> '10.77.0.5'."""
    if len(labels) != 6 or labels[4:] != [b"in-addr", b"arpa"]:
        return None
    try:
        octets = [int(x) for x in reversed(labels[:4])]
        if not all(x.isdigit() and len(x) <= 3 for x in labels[:4]):
            return None
        return str(ipaddress.IPv4Address(bytes(octets)))
    except ValueError:
        return None


def rr(rtype: int, ttl: int, rdata: bytes, owner: bytes = NAME_POINTER_TO_QUESTION) -> bytes:
    return owner + RR_FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata
