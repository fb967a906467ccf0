"""The DHCPv6 protocol logic (RFC 8415), without sockets: a message in, replies out.

`Dhcp6Engine.handle(data, src, now)` takes one datagram and its source address
and returns the replies to send, each saying whether it must wait until the
bindings changed by this batch are committed (`durable`: every REPLY that
binds, renews, releases or declines) or may leave at once (ADVERTISE, the
answers to CONFIRM and INFORMATION-REQUEST). The server loop owns the socket and
the group commit, as for DHCPv4.

Modes: `stateful` hands out addresses (IA_NA) and answers information
requests; `stateless` answers only INFORMATION-REQUEST (DNS servers, domain
list, boot URL). RELAY-FORW messages are unwrapped (nested relays too) and the
reply goes back wrapped in RELAY-REPL to the relay, with its INTERFACE_ID.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

from netservices.dhcp.store import EventRecord

from . import codec
from .codec import (
    ADVERTISE,
    CONFIRM,
    DECLINE,
    INFORMATION_REQUEST,
    MESSAGE_TYPE_NAMES,
    OPT_BOOTFILE_URL,
    OPT_CLIENT_LINKLAYER_ADDR,
    OPT_CLIENTID,
    OPT_DNS_SERVERS,
    OPT_DOMAIN_LIST,
    OPT_IA_NA,
    OPT_IA_PD,
    OPT_IA_TA,
    OPT_INFORMATION_REFRESH_TIME,
    OPT_INTERFACE_ID,
    OPT_PREFERENCE,
    OPT_RAPID_COMMIT,
    OPT_RELAY_MSG,
    OPT_SERVERID,
    OPT_VENDOR_CLASS,
    REBIND,
    RELAY_FORW,
    RELAY_REPL,
    RELEASE,
    RENEW,
    REPLY,
    REQUEST,
    SOLICIT,
    MalformedPacket,
    Message,
    RelayMessage,
    encode_ia_na,
    encode_iaaddr,
    encode_status,
    option,
)
from .policy import Boot6Answer, Boot6Settings, boot_answer6
from .pool import BOUND, DECLINED, Lease6, Pool6, int_to_ip6, ip6_to_int
from .store import Host6Entry, Lease6Record

CLIENT_PORT, SERVER_PORT = 546, 547
ALL_SERVERS_AND_RELAYS = "ff02::1:2"
ENTERPRISE_IANA = 343  # Intel: the enterprise number UEFI firmwares send with HTTPClient
_ZERO16 = bytes(16)
_FAST_TYPES = (bytes((SOLICIT,)), bytes((REQUEST,)))
_FAST_SKIP = frozenset((codec.OPT_ORO, codec.OPT_ELAPSED_TIME))
_IAADDR_HEAD = struct.pack("!HH", codec.OPT_IAADDR, 24)
_RAPID_OPT = option(OPT_RAPID_COMMIT, b"")
_PREFERENCE_OPT = option(OPT_PREFERENCE, b"\xff")


@dataclass(frozen=True)
class Dhcp6Settings:
    """Everything the DHCPv6 server needs from the configuration, as plain values."""

    mode: str  # stateful | stateless
    interface: str
    server_ip: str  # the router's address in the LAN prefix
    prefix: str  # the LAN /64 (any length up to /64 works)
    range_first: str
    range_last: str
    server_duid: bytes
    preferred_seconds: int = 3600
    valid_seconds: int = 7200
    dns_servers: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    rapid_commit: bool = True
    unknown_clients: str = "menu"
    boot_base_url: str = ""  # http://[addr]:port; "" when HTTP boot does not listen on IPv6
    tftp_server: str = ""  # the address in tftp:// URLs; "" when TFTP does not listen on IPv6
    info_refresh_seconds: int = 86400
    offer_hold_seconds: float = 30.0

    @property
    def boot(self) -> Boot6Settings:
        return Boot6Settings(self.tftp_server, self.boot_base_url, self.unknown_clients)


def needs_restart(old: Dhcp6Settings, new: Dhcp6Settings) -> bool:
    """Whether a change needs new sockets or a new pool (interface, mode, prefix, DUID)."""
    return (old.mode, old.interface, old.server_ip, old.prefix, old.server_duid) != (
        new.mode, new.interface, new.server_ip, new.prefix, new.server_duid)


@dataclass(slots=True)
class Reply6:
    payload: bytes
    ip: str
    port: int
    durable: bool = False


class Counters:
    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.boot: Counter[str] = Counter()

    def to_dict(self) -> dict[str, Any]:
        return {"received": dict(self.received), "sent": dict(self.sent),
                "dropped": dict(self.dropped), "boot": dict(self.boot)}


class Drop(Exception):
    """The message is dropped; the argument is the counter's reason."""


@dataclass(slots=True)
class _Ctx:
    """One client message being answered: who sent it and what it asked."""

    msg: Message
    duid: bytes
    mac: str | None
    host: Host6Entry | None


def _fast_scan(data: bytes) -> tuple[bytes, bytes | None, bytes, bool] | None:
    """(client id, server id, the IA_NA, rapid commit) of a client message made only
    of the options the fast path answers, each once (IA_NA exactly once); else None."""
    n = len(data)
    i = 4
    cid = sid = ia = None
    rapid = False
    while i < n:
        if i + 4 > n:
            return None
        c = (data[i] << 8) | data[i + 1]
        j = i + 4 + ((data[i + 2] << 8) | data[i + 3])
        if j > n:
            return None
        if c == OPT_CLIENTID and cid is None:
            cid = data[i + 4 : j]
        elif c == OPT_SERVERID and sid is None:
            sid = data[i + 4 : j]
        elif c == OPT_IA_NA and ia is None:
            ia = data[i + 4 : j]
        elif c == OPT_RAPID_COMMIT:
            rapid = True
        elif c not in _FAST_SKIP:
            return None  # another option, or one of the above twice
        i = j
    if not cid or ia is None:
        return None
    return cid, sid, ia, rapid


def _mac_str(mac: bytes | None) -> str | None:
    return mac.hex(":") if mac is not None and len(mac) == 6 else None


class Dhcp6Engine:
    def __init__(self, settings: Dhcp6Settings, *, decline_quarantine: float | None = None):
        self.settings = settings
        self.counters = Counters()
        self.hosts: dict[str, Host6Entry] = {}
        self.pending_events: list[EventRecord] = []
        self.dirty: dict[int, Lease6] = {}
        self._fixed_quarantine = decline_quarantine
        self.fast = True  # the fast path (off: every message takes the general path)
        net = ipaddress.IPv6Network(settings.prefix, strict=False)
        self.pool = Pool6(ip6_to_int(settings.range_first), ip6_to_int(settings.range_last), net,
                          offer_hold=settings.offer_hold_seconds)
        self._serverid_opt = option(OPT_SERVERID, settings.server_duid)
        self._encode_options(settings)

    def _encode_options(self, s: Dhcp6Settings) -> None:
        self.quarantine = (self._fixed_quarantine if self._fixed_quarantine is not None
                           else s.valid_seconds)
        info = []
        if s.dns_servers:
            info.append(option(OPT_DNS_SERVERS, b"".join(
                ipaddress.IPv6Address(x).packed for x in s.dns_servers)))
        if s.domains:
            info.append(option(OPT_DOMAIN_LIST, codec.encode_domains(list(s.domains))))
        self._info = b"".join(info)
        self._refresh = option(OPT_INFORMATION_REFRESH_TIME, struct.pack("!I",
                                                                          s.info_refresh_seconds))
        self._t1 = s.preferred_seconds // 2
        self._t2 = s.preferred_seconds * 4 // 5
        self._boot = s.boot  # resolved once, not per packet

    def reconfigure(self, s: Dhcp6Settings) -> None:
        """New range, lifetimes, options and boot policy; every binding is kept."""
        if needs_restart(self.settings, s):
            raise ValueError("interface, mode, prefix or DUID changed: restart the server")
        self.settings = s
        self.pool.set_range(ip6_to_int(s.range_first), ip6_to_int(s.range_last))
        self.pool.offer_hold = s.offer_hold_seconds
        self._encode_options(s)

    # -- state ------------------------------------------------------------------
    def load(self, records: list[Lease6Record]) -> None:
        leases = []
        for r in records:
            key = (b"", 0) if r.state == DECLINED else (bytes.fromhex(r.duid), r.iaid)
            leases.append(Lease6(ip6_to_int(r.address), key, r.mac, r.hostname, r.state,
                                 r.starts, r.expires))
        self.pool.load(leases)

    def set_hosts(self, hosts: dict[str, Host6Entry]) -> None:
        self.hosts = hosts
        self.pool.set_reservations({mac: ip6_to_int(h.ip6_reservation)
                                    for mac, h in hosts.items() if h.ip6_reservation})

    def take_dirty(self, now: float) -> tuple[list[Lease6Record], list[EventRecord]]:
        rows = [Lease6Record(int_to_ip6(le.address), le.key[0].hex(), le.key[1], le.mac,
                             le.hostname, le.state, le.starts, le.expires, now)
                for le in self.dirty.values()]
        events, self.pending_events, self.dirty = self.pending_events, [], {}
        return rows, events

    def stats(self, now: float) -> dict[str, Any]:
        return {**self.counters.to_dict(), "pool": self.pool.stats(now)}

    # -- packets ----------------------------------------------------------------
    def handle(self, data: bytes, src: str, now: float) -> list[Reply6]:
        """One datagram from `src` (an IPv6 address, scope stripped)."""
        try:
            if data[:1] in _FAST_TYPES and self.fast:
                fast = self._fast_path(data, src, now)
                if fast is not None:
                    return fast
            msg = codec.parse(data)
            if isinstance(msg, RelayMessage):
                return self._relayed(msg, src, now)
            if msg.msg_type in (ADVERTISE, REPLY, RELAY_REPL, codec.RECONFIGURE):
                raise Drop("not_for_server")
            src_b = ip6_to_int(src).to_bytes(16, "big")
            payload, durable = self._answer(msg, codec.mac_from_link_local(src_b), now)
            return [Reply6(payload, src, CLIENT_PORT, durable)]
        except MalformedPacket:
            self.counters.dropped["malformed"] += 1
        except Drop as d:
            self.counters.dropped[d.args[0]] += 1
        except ValueError:  # a bad address in an option (e.g. an unparsable source)
            self.counters.dropped["malformed"] += 1
        return []

    def _relayed(self, outer: RelayMessage, src: str, now: float) -> list[Reply6]:
        if outer.msg_type != RELAY_FORW:
            raise Drop("not_for_server")
        chain = [outer]
        while isinstance(chain[-1].inner, RelayMessage):
            if chain[-1].inner.msg_type != RELAY_FORW:
                raise Drop("not_for_server")
            chain.append(chain[-1].inner)
        innermost = chain[-1]
        msg = innermost.inner
        assert isinstance(msg, Message)
        if msg.msg_type in (ADVERTISE, REPLY, codec.RECONFIGURE):
            raise Drop("not_for_server")
        link = innermost.link_address
        if link != _ZERO16 and not self.pool.in_network(ip6_to_int(link)):
            raise Drop("relay_outside_network")
        self.counters.received["relay_forw"] += 1
        lla = innermost.get(OPT_CLIENT_LINKLAYER_ADDR)
        mac = lla[2:8] if lla is not None and len(lla) == 8 and lla[:2] == b"\x00\x01" else (
            codec.mac_from_link_local(innermost.peer_address))
        payload, durable = self._answer(msg, mac, now)
        for rm in reversed(chain):
            opts = [(OPT_RELAY_MSG, payload)]
            iid = rm.get(OPT_INTERFACE_ID)
            if iid is not None:
                opts.append((OPT_INTERFACE_ID, iid))
            payload = RelayMessage(RELAY_REPL, rm.hop_count, rm.link_address, rm.peer_address,
                                   opts).encode()
        self.counters.sent["relay_repl"] += 1
        return [Reply6(payload, src, SERVER_PORT, durable)]

    def _answer(self, msg: Message, src_mac: bytes | None, now: float) -> tuple[bytes, bool]:
        """(the reply, whether it waits for the commit) to one client message."""
        mt = msg.msg_type
        self.counters.received[MESSAGE_TYPE_NAMES.get(mt, str(mt))] += 1
        duid = msg.client_id
        sid = msg.server_id
        if mt == INFORMATION_REQUEST:
            if sid is not None and sid != self.settings.server_duid:
                raise Drop("other_server")
            if msg.has(OPT_IA_NA) or msg.has(OPT_IA_TA) or msg.has(OPT_IA_PD):
                raise Drop("ia_in_information_request")
            ctx = self._ctx(msg, duid or b"", src_mac)
            return self._info_reply(ctx, now), False
        if duid is None or not duid:
            raise Drop("no_client_id")
        if mt in (SOLICIT, CONFIRM, REBIND):
            if sid is not None:
                raise Drop("server_id_not_allowed")
        elif mt in (REQUEST, RENEW, RELEASE, DECLINE):
            if sid != self.settings.server_duid:
                raise Drop("other_server")
        else:
            raise Drop("unexpected_type")
        if self.settings.mode != "stateful":
            raise Drop("stateless_mode")
        ctx = self._ctx(msg, duid, src_mac)
        if mt == SOLICIT:
            return self._solicit(ctx, now)
        if mt in (REQUEST, RENEW, REBIND):
            return self._bind_reply(ctx, now, mt), True
        if mt == CONFIRM:
            return self._confirm(ctx), False
        if mt == RELEASE:
            return self._release(ctx, now), True
        return self._decline(ctx, now), True

    def _ctx(self, msg: Message, duid: bytes, src_mac: bytes | None) -> _Ctx:
        mac = _mac_str(codec.mac_from_duid(duid) or src_mac)
        return _Ctx(msg, duid, mac, self.hosts.get(mac) if mac else None)

    # -- replies ------------------------------------------------------------------
    def _head(self, ctx: _Ctx, mt: int) -> list[bytes]:
        return self._reply_head(mt, ctx.msg.xid, ctx.duid)

    def _reply_head(self, mt: int, xid: bytes, duid: bytes) -> list[bytes]:
        """Type, transaction id, our server id and the client's (counted as sent)."""
        self.counters.sent[MESSAGE_TYPE_NAMES[mt]] += 1
        out = [bytes((mt,)), xid, self._serverid_opt]
        if duid:
            out.append(option(OPT_CLIENTID, duid))
        return out

    def _tail(self, ctx: _Ctx, ip: int | None, now: float) -> bytes:
        """DNS servers, domain list, and the boot URL when the client asks for one
        (`ip`: the address bound, for the boot event)."""
        ans = boot_answer6(ctx.msg, ctx.mac, ctx.host, self._boot)
        if ans is None:
            return self._info
        self.counters.boot[ans.kind] += 1
        self._boot_event(ctx, ans, None if ip is None else int_to_ip6(ip), now)
        extra = option(OPT_BOOTFILE_URL, ans.url.encode())
        if ans.http_client:
            extra += option(OPT_VENDOR_CLASS, struct.pack("!I", ENTERPRISE_IANA)
                            + codec.encode_classes([b"HTTPClient"]))
        return self._info + extra

    def _boot_event(self, ctx: _Ctx, ans: Boot6Answer, ip: str | None, now: float) -> None:
        self.pending_events.append(EventRecord(
            "boot.dhcp6", f"boot answer {ans.url} to {ctx.mac or ctx.duid.hex()} (arch {ans.arch})",
            now, host_id=ctx.host.id if ctx.host else None, mac=ctx.mac, ip=ip,
            data={"arch": ans.arch, "boot_url": ans.url, "kind": ans.kind}))

    def _info_reply(self, ctx: _Ctx, now: float) -> bytes:
        return b"".join(self._head(ctx, REPLY)) + self._refresh + self._tail(ctx, None, now)

    def _ia(self, iaid: int, address: int, preferred: int, valid: int) -> bytes:
        t1, t2 = (self._t1, self._t2) if valid else (0, 0)
        return encode_ia_na(iaid, t1, t2,
                            encode_iaaddr(address.to_bytes(16, "big"), preferred, valid))

    def _solicit(self, ctx: _Ctx, now: float) -> tuple[bytes, bool]:
        msg = ctx.msg
        rapid = self.settings.rapid_commit and msg.has(OPT_RAPID_COMMIT)
        ias = msg.ia_nas
        s = self.settings
        body, first_ip = [], None
        for ia in ias:
            key = (ctx.duid, ia.iaid)
            hints = [ip6_to_int(a.address) for a in ia.addresses]
            a = self.pool.choose(key, ctx.mac, hints, now)
            if a is None:
                self.counters.dropped["pool_exhausted"] += 1
                body.append(encode_ia_na(ia.iaid, 0, 0, encode_status(codec.NO_ADDRS_AVAIL,
                                                                      "no addresses left")))
                continue
            if rapid:
                self._bind(ctx, key, a, now)
            else:
                self.pool.offer(key, ctx.mac, a, now)
            first_ip = first_ip if first_ip is not None else a
            body.append(self._ia(ia.iaid, a, s.preferred_seconds, s.valid_seconds))
        if not ias:
            body.append(encode_status(codec.NO_ADDRS_AVAIL, "no IA_NA in the solicit"))
        head = self._head(ctx, REPLY if rapid else ADVERTISE)
        head.append(_RAPID_OPT if rapid else _PREFERENCE_OPT)  # PREFERENCE 255: take it now
        return b"".join(head + body) + self._tail(ctx, first_ip, now), rapid

    def _bind(self, ctx: _Ctx, key: tuple[bytes, int], a: int, now: float) -> None:
        self._bind_key(key, ctx.mac, ctx.host, ctx.msg.fqdn, a, now)

    def _bind_key(self, key: tuple[bytes, int], mac: str | None, host: Host6Entry | None,
                  hostname: str | None, a: int, now: float) -> None:
        before = self.pool.by_addr.get(a)
        was_bound = before is not None and before.key == key and before.state == BOUND \
            and before.expires > now
        dirty = self.dirty
        for le in self.pool.bind(key, mac, a, hostname, now, self.settings.valid_seconds):
            dirty[le.address] = le
        if not was_bound:
            ip = int_to_ip6(a)
            duid = key[0].hex()
            self.pending_events.append(EventRecord(
                "dhcp6.lease", f"{ip} leased to {mac or duid}"
                + (f" ({hostname})" if hostname else ""),
                now, host_id=host.id if host else None, mac=mac, ip=ip,
                data={"duid": duid, "iaid": key[1]}))

    # -- the fast path --------------------------------------------------------------
    # Most messages are a SOLICIT (with or without rapid commit) or a REQUEST sent
    # straight to us, with one IA_NA holding at most one address, and no options
    # beyond the client and server ids, ORO, elapsed time and rapid commit: no
    # relay, no boot options, no FQDN. Those are answered here from one scan of
    # the options, with the reply assembled from precomputed bytes; the answer is
    # byte for byte the general path's (tests/unit/test_dhcp6.py compares them).
    # Anything else, or anything the general path would refuse or answer with a
    # status, returns None and takes the general path, which also counts drops.
    def _fast_path(self, data: bytes, src: str, now: float) -> list[Reply6] | None:
        if self.settings.mode != "stateful":
            return None
        scan = _fast_scan(data)
        if scan is None:
            return None
        cid, sid, ia, rapid = scan
        ln = len(ia)
        if ln == 12:
            asked = None
        elif ln == 40 and ia[12:16] == _IAADDR_HEAD:  # one IAADDR, no sub-options
            asked = int.from_bytes(ia[16:32], "big")
        else:
            return None
        mt = data[0]
        if mt == SOLICIT:
            if sid is not None:
                return None
        elif sid != self.settings.server_duid or asked is None:
            return None
        mac = _mac_str(codec.mac_from_duid(cid)  # as _ctx; the source address only if needed
                       or codec.mac_from_link_local(ip6_to_int(src).to_bytes(16, "big")))
        host = self.hosts.get(mac) if mac else None
        iaid = int.from_bytes(ia[:4], "big")
        key = (cid, iaid)
        pool = self.pool
        s = self.settings
        if mt == SOLICIT:
            a = pool.choose(key, mac, [] if asked is None else [asked], now)
            if a is None:
                return None  # the general path answers NoAddrsAvail
            rapid = rapid and s.rapid_commit
            self.counters.received["solicit"] += 1
            if rapid:
                self._bind_key(key, mac, host, None, a, now)
                head = [*self._reply_head(REPLY, data[1:4], cid), _RAPID_OPT]
            else:
                pool.offer(key, mac, a, now)
                head = [*self._reply_head(ADVERTISE, data[1:4], cid), _PREFERENCE_OPT]
        else:
            reserved = pool.reserved.get(mac) if mac else None
            if (reserved is not None and reserved != asked) or not pool.usable_by(
                    asked, key, mac, now):
                return None  # the reservation wins, or another address: the general path
            a = asked
            self.counters.received["request"] += 1
            self._bind_key(key, mac, host, None, a, now)
            head = self._reply_head(REPLY, data[1:4], cid)
            rapid = True  # durable: it binds
        return [Reply6(b"".join((*head, self._ia(iaid, a, s.preferred_seconds, s.valid_seconds),
                                 self._info)), src, CLIENT_PORT, rapid)]

    def _bind_reply(self, ctx: _Ctx, now: float, mt: int) -> bytes:
        """REQUEST, RENEW, REBIND: bind each IA_NA to the address it asks for when that
        is still its own or free, else to another one; an address it may not keep is
        returned with lifetimes 0 (RFC 8415 18.3.4/18.3.5)."""
        s = self.settings
        body, first_ip = [], None
        for ia in ctx.msg.ia_nas:
            key = (ctx.duid, ia.iaid)
            asked = [ip6_to_int(x.address) for x in ia.addresses]
            ok = [a for a in asked if self.pool.usable_by(a, key, ctx.mac, now)]
            reserved = self.pool.reserved.get(ctx.mac) if ctx.mac else None
            if reserved is not None and reserved not in ok and self.pool.usable_by(
                    reserved, key, ctx.mac, now):
                ok = [reserved]  # the host's reservation wins over what it had
            a = ok[0] if ok else self.pool.choose(key, ctx.mac, [], now)
            parts = [encode_iaaddr(x.to_bytes(16, "big"), 0, 0) for x in asked if x != a]
            if a is None:
                self.counters.dropped["pool_exhausted"] += 1
                parts.append(encode_status(codec.NO_ADDRS_AVAIL, "no addresses left"))
                body.append(encode_ia_na(ia.iaid, 0, 0, b"".join(parts)))
                continue
            self._bind(ctx, key, a, now)
            first_ip = first_ip if first_ip is not None else a
            parts.insert(0, encode_iaaddr(a.to_bytes(16, "big"), s.preferred_seconds,
                                          s.valid_seconds))
            body.append(encode_ia_na(ia.iaid, self._t1, self._t2, b"".join(parts)))
        return b"".join(self._head(ctx, REPLY) + body) + self._tail(ctx, first_ip, now)

    def _confirm(self, ctx: _Ctx) -> bytes:
        addrs = [ip6_to_int(x.address) for ia in ctx.msg.ia_nas for x in ia.addresses]
        if not addrs:
            raise Drop("confirm_without_address")
        on_link = all(self.pool.in_network(a) for a in addrs)
        status = encode_status(codec.SUCCESS if on_link else codec.NOT_ON_LINK,
                               "on link" if on_link else "not on this link")
        return b"".join(self._head(ctx, REPLY)) + status

    def _release(self, ctx: _Ctx, now: float) -> bytes:
        body = []
        for ia in ctx.msg.ia_nas:
            key = (ctx.duid, ia.iaid)
            for x in ia.addresses:
                a = ip6_to_int(x.address)
                le = self.pool.release(key, a, now)
                if le is None:
                    body.append(encode_ia_na(ia.iaid, 0, 0, encode_status(
                        codec.NO_BINDING, "no such binding")))
                    continue
                self.dirty[a] = le
                self.pending_events.append(EventRecord(
                    "dhcp6.release", f"{int_to_ip6(a)} released by {ctx.mac or ctx.duid.hex()}",
                    now, host_id=ctx.host.id if ctx.host else None, mac=ctx.mac,
                    ip=int_to_ip6(a)))
        return b"".join(self._head(ctx, REPLY) + body) + encode_status(codec.SUCCESS, "released")

    def _decline(self, ctx: _Ctx, now: float) -> bytes:
        for ia in ctx.msg.ia_nas:
            key = (ctx.duid, ia.iaid)
            for x in ia.addresses:
                a = ip6_to_int(x.address)
                le = self.pool.decline(key, a, now, self.quarantine)
                if le is None:
                    self.counters.dropped["decline_unknown"] += 1
                    continue
                self.dirty[a] = le
                self.pending_events.append(EventRecord(
                    "dhcp6.decline", f"{int_to_ip6(a)} declined by {ctx.mac or ctx.duid.hex()}: "
                    f"in use on the network; quarantined for {int(self.quarantine)} s", now,
                    level="warning", mac=ctx.mac, ip=int_to_ip6(a)))
        return b"".join(self._head(ctx, REPLY)) + encode_status(codec.SUCCESS, "declined")
