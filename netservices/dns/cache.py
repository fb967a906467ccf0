"""A cache of upstream answers that honours their TTLs.

An entry keeps the upstream reply's wire form (its OPT record removed) and
where each record's TTL sits in it; once per elapsed second the TTLs are
counted down in place, so a hit is a few slices. Negative answers are kept for
the SOA's minimum TTL; answers without a TTL to honour (SERVFAIL, truncated)
are not kept.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

from dnslib import QTYPE, DNSRecord

from . import wire


@dataclass
class Entry:
    stored_at: int
    expires_at: float
    original: bytes
    ttl_offsets: tuple[tuple[int, int], ...]  # (offset of a TTL field, its value when stored)
    packed: bytes  # `original` with TTLs counted down to `packed_at`
    packed_at: int


def ttl_offsets(packed: bytes) -> tuple[tuple[int, int], ...]:
    """Where each record's TTL sits in a response's wire form."""
    _, _, qd, an, ns, ar = wire.HEADER.unpack_from(packed)
    i = 12
    for _ in range(qd):
        i = wire.skip_name(packed, i) + 4
    out = []
    for _ in range(an + ns + ar):
        j = wire.skip_name(packed, i)
        _rtype, _rclass, ttl, rdlen = wire.RR_FIXED.unpack_from(packed, j)
        out.append((j + 4, ttl))
        i = j + 10 + rdlen
    return tuple(out)


def reply_ttl(record: DNSRecord) -> int | None:
    """How long a reply may be cached, or None if it must not be."""
    rcode = record.header.rcode
    if record.header.tc or rcode not in (wire.NOERROR, wire.NXDOMAIN):
        return None
    if not record.header.qr or record.header.opcode != 0:
        return None  # not an answer to a standard query: never served to anyone
    ttls = [r.ttl for r in record.rr]
    if not ttls:  # negative: the SOA's minimum (RFC 2308)
        soas = [r for r in record.auth if r.rtype == QTYPE.SOA]
        if not soas:
            return None
        return min(soas[0].ttl, soas[0].rdata.times[4])
    return min(ttls + [r.ttl for r in record.auth])


class ForwardCache:
    def __init__(self, max_entries: int = 10_000, max_ttl: int = 86_400):
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._entries: OrderedDict[tuple[bytes, int, int], Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: tuple[bytes, int, int], reply: bytes, now: float) -> bool:
        """Keep an upstream reply (wire bytes). Returns whether it was cached. A truncated
        reply (TC) is not: it lacks records, and the client asks again over TCP."""
        if len(reply) < 4 or reply[2] & (wire.TC >> 8):
            return False
        try:
            record = DNSRecord.parse(reply)
        except Exception:  # noqa: BLE001 - dnslib raises several kinds on junk
            return False
        ttl = reply_ttl(record)
        if ttl is None or ttl <= 0:
            return False
        record.ar = [r for r in record.ar if r.rtype != QTYPE.OPT]
        sec = int(now)
        try:
            packed = bytes(record.pack())
            offsets = ttl_offsets(packed)
        except Exception:  # noqa: BLE001 - what dnslib cannot re-pack is not cached
            return False
        entry = Entry(sec, now + min(ttl, self.max_ttl), packed, offsets, packed, sec)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return True

    def get(self, query: wire.Query, now: float, limit: int | None) -> bytes | None:
        """The cached answer for `query` with TTLs counted down, or None."""
        key = (query.key, query.qtype, query.qclass)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        sec = int(now)
        packed = entry.packed
        if sec != entry.packed_at:
            elapsed = sec - entry.stored_at
            buf = bytearray(entry.original)
            for off, ttl in entry.ttl_offsets:
                struct.pack_into("!I", buf, off, max(0, ttl - elapsed))
            packed = bytes(buf)
            entry.packed, entry.packed_at = packed, sec
        qlen = len(query.question)
        if packed[12:12 + qlen].lower() != query.question.lower():
            return None  # not the same question (should not happen: keyed by it)
        flags = (struct.unpack_from("!H", packed, 2)[0] & ~wire.RD & ~wire.TC) | query.rd
        _, _, qd, an, ns, ar = wire.HEADER.unpack_from(packed)
        body = packed[12 + qlen:]
        opt = b""
        if query.edns_size is not None:
            opt = wire.opt_record()
            ar += 1
        out = b"".join((wire.HEADER.pack(query.id, flags, qd, an, ns, ar), query.question, body, opt))
        if limit is not None and len(out) > limit:
            return wire.truncated(query, flags)
        return out

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
