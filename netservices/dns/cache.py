"""A cache of upstream answers that honours their TTLs.

An entry keeps the parsed upstream reply (without its OPT record) and its wire
form re-packed once per elapsed second with the TTLs counted down, so a hit is
a few slices. Negative answers are kept for the SOA's minimum TTL; answers
without a TTL to honour (SERVFAIL, truncated) are not kept.
"""

from __future__ import annotations

import copy
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

from dnslib import QTYPE, DNSRecord

from . import wire


@dataclass
class Entry:
    record: DNSRecord
    stored_at: int
    expires_at: float
    packed: bytes
    packed_at: int
    ar_extra: int  # additional records kept (OPT removed)


def reply_ttl(record: DNSRecord) -> int | None:
    """How long a reply may be cached, or None if it must not be."""
    rcode = record.header.rcode
    if record.header.tc or rcode not in (wire.NOERROR, wire.NXDOMAIN):
        return None
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
        """Keep an upstream reply (wire bytes). Returns whether it was cached."""
        try:
            record = DNSRecord.parse(reply)
        except Exception:  # noqa: BLE001 - dnslib raises several kinds on junk
            return False
        ttl = reply_ttl(record)
        if ttl is None or ttl <= 0:
            return False
        record.ar = [r for r in record.ar if r.rtype != QTYPE.OPT]
        sec = int(now)
        entry = Entry(record, sec, now + min(ttl, self.max_ttl), record.pack(), sec, len(record.ar))
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
            rec = copy.deepcopy(entry.record)
            for r in (*rec.rr, *rec.auth, *rec.ar):
                r.ttl = max(0, r.ttl - elapsed)
            packed = rec.pack()
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
