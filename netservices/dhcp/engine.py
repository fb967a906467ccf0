"""The DHCP protocol logic, without sockets: a request in, replies out.

`AuthoritativeEngine.handle()` takes the bytes of one request and returns the
replies to send, each saying whether it must wait until the leases changed by
this batch are committed (ACKs) or may leave at once (OFFERs, NAKs). The
server loop owns the socket and the group commit; the engine owns the pool,
the counters and the events waiting for the next commit.

`ProxyEngine` answers only PXE clients, with boot information and no address.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import codec
from .codec import (
    ACK,
    BOOTREQUEST,
    DECLINE,
    DISCOVER,
    INFORM,
    NAK,
    OFFER,
    RELEASE,
    REQUEST,
    MalformedPacket,
    Packet,
    encode_option,
)
from .policy import BootAnswer, BootSettings, boot_answer, is_pxe_client
from .pool import (
    BOUND,
    MAX_DECLINES_PER_CLIENT,
    Lease,
    LeasePool,
    client_key,
    int_to_ip,
    ip_to_int,
)
from .store import EventRecord, HostEntry, LeaseRecord

ZERO = b"\0\0\0\0"
_SNAME_FILE = bytes(64 + 128)
BROADCAST_ADDR = "255.255.255.255"
# iPXE's encapsulated options (175): sub-option 176 "no-pxedhcp" = 1
IPXE_NO_PXEDHCP = encode_option(codec.OPT_IPXE_ENCAP, bytes((176, 1, 1)))
CLIENT_PORT, SERVER_PORT, PXE_PORT = 68, 67, 4011


@dataclass(frozen=True)
class DhcpSettings:
    """Everything the DHCP server needs from the configuration, as plain values."""

    mode: str  # authoritative | proxy
    interface: str
    server_ip: str
    prefix: int
    range_first: str
    range_last: str
    lease_seconds: int = 3600
    router: str | None = None
    dns_servers: tuple[str, ...] = ()
    domain: str | None = None
    unknown_clients: str = "menu"
    boot_base_url: str = ""
    offer_hold_seconds: float = 30.0
    conflict_check: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> DhcpSettings:
        """From the appliance's Config object (duck-typed: no appliance import)."""
        iface = ipaddress.IPv4Interface(cfg.lan.address)
        d = cfg.dhcp
        return cls(mode=d.mode, interface=cfg.lan.interface, server_ip=str(iface.ip),
                   prefix=iface.network.prefixlen, range_first=d.range[0], range_last=d.range[1],
                   lease_seconds=d.lease_seconds, router=d.router or str(iface.ip),
                   dns_servers=tuple(d.dns_servers or [str(iface.ip)]), domain=cfg.lan.domain,
                   unknown_clients=d.unknown_clients, boot_base_url=cfg.boot_base_url,
                   conflict_check=d.conflict_check)

    @property
    def boot(self) -> BootSettings:
        return BootSettings(self.server_ip, self.boot_base_url, self.unknown_clients)


def needs_restart(old: DhcpSettings, new: DhcpSettings) -> bool:
    """Whether a change needs new sockets or a new engine (interface, mode, the
    server's own address or network, the ping check), not just new settings."""
    return (old.mode, old.interface, old.server_ip, old.prefix, old.conflict_check) != (
        new.mode, new.interface, new.server_ip, new.prefix, new.conflict_check)


@dataclass(slots=True)
class Reply:
    payload: bytes
    ip: str
    port: int
    arp_mac: bytes | None = None  # unicast to an address with no ARP entry yet
    durable: bool = False  # hold until the batch's leases are committed


def reply_destination(req: Packet, msg_type: int, yiaddr: bytes) -> tuple[str, int, bool]:
    """RFC 2131 4.1: (ip, port, needs an ARP entry for chaddr)."""
    if req.giaddr != ZERO:
        return codec.ip_str(req.giaddr), SERVER_PORT, False
    if msg_type == NAK:
        return BROADCAST_ADDR, CLIENT_PORT, False
    if req.ciaddr != ZERO:
        return codec.ip_str(req.ciaddr), CLIENT_PORT, False
    if req.broadcast or yiaddr == ZERO or req.htype != 1 or req.hlen != 6:
        return BROADCAST_ADDR, CLIENT_PORT, False
    return codec.ip_str(yiaddr), CLIENT_PORT, True


class Counters:
    """Packets in/out by message type, dropped by reason, and boot answers by kind
    (tftp, http, script, or none for a PXE client that got no boot answer)."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.boot: Counter[str] = Counter()

    def to_dict(self) -> dict[str, Any]:
        return {"received": dict(self.received), "sent": dict(self.sent),
                "dropped": dict(self.dropped), "boot": dict(self.boot)}


class _Base:
    def __init__(self, settings: DhcpSettings):
        self.settings = settings
        self.counters = Counters()
        self.hosts: dict[str, HostEntry] = {}
        self.pending_events: list[EventRecord] = []
        self.server_id = codec.ip_bytes(settings.server_ip)
        self._server_id_opt = encode_option(codec.OPT_SERVER_ID, self.server_id)

    def set_hosts(self, hosts: dict[str, HostEntry]) -> None:
        self.hosts = hosts

    def reconfigure(self, s: DhcpSettings) -> None:
        """New settings on the same interface and network (see `needs_restart`)."""
        if needs_restart(self.settings, s):
            raise ValueError("interface, mode or network changed: restart the server")
        self.settings = s

    def _parse(self, data: bytes) -> Packet | None:
        try:
            req = codec.parse(data)
        except MalformedPacket:
            self.counters.dropped["malformed"] += 1
            return None
        if req.op != BOOTREQUEST:
            self.counters.dropped["not_a_request"] += 1
            return None
        mt = req.message_type
        if mt is None:
            self.counters.dropped["no_message_type"] += 1
            return None
        self.counters.received[codec.MESSAGE_TYPE_NAMES.get(mt, str(mt))] += 1
        return req

    def _boot(self, req: Packet, now: float) -> tuple[BootAnswer | None, HostEntry | None]:
        o = req.options
        if 60 not in o and 77 not in o and 175 not in o:  # cheap test first: most packets
            return None, None
        if not is_pxe_client(req):
            return None, None
        mac = req.mac_str
        host = self.hosts.get(mac)
        ans = boot_answer(req, host, self.settings.boot)
        self.counters.boot[ans.kind if ans else "none"] += 1
        return ans, host

    def _boot_event(self, req: Packet, ans: BootAnswer, host: HostEntry | None, ip: str | None,
                    now: float) -> None:
        self.pending_events.append(EventRecord(
            "boot.dhcp", f"boot answer {ans.filename} to {req.mac_str} (arch {ans.arch})", now,
            host_id=host.id if host else None, mac=req.mac_str, ip=ip,
            data={"arch": ans.arch, "boot_file": ans.filename, "kind": ans.kind,
                  "vendor_class": req.vendor_class[:64].decode("ascii", "replace")}))

    # Option 60 "PXEClient" marks a proxyDHCP answer. From a server that also
    # hands out the address it would make EDK2 classify the offer as "BINL" and
    # ask again on port 4011, so the authoritative server echoes only
    # "HTTPClient" (which UEFI HTTP Boot requires).
    echo_pxeclient = False
    # iPXE holds its DHCPREQUEST for ~3 s after an OFFER, waiting for a ProxyDHCP
    # OFFER, unless the OFFER carries its "no-pxedhcp" setting (option 175, sub-option
    # 176 = 1). The authoritative server is the boot server: there is nothing to wait
    # for, so iPXE gets it (each iPXE DHCP round, BIOS and UEFI, ~3 s shorter).
    tell_ipxe_no_proxydhcp = False

    def _boot_options(self, ans: BootAnswer) -> bytes:
        opts = [encode_option(codec.OPT_BOOTFILE, ans.filename.encode())]
        if self.echo_pxeclient or ans.kind == "http":
            opts.insert(0, encode_option(codec.OPT_VENDOR_CLASS, ans.vendor_class))
        if self.tell_ipxe_no_proxydhcp and ans.kind == "script":
            opts.append(IPXE_NO_PXEDHCP)
        if ans.tftp_server:
            opts.append(encode_option(codec.OPT_TFTP_SERVER, ans.tftp_server.encode()))
        return b"".join(opts)

    def _header(self, req: Packet, yiaddr: bytes, ciaddr: bytes = ZERO,
                ans: BootAnswer | None = None) -> bytes:
        siaddr = codec.ip_bytes(ans.tftp_server) if ans and ans.tftp_server else (
            self.server_id if ans else ZERO)
        bootfile = ans.filename.encode() if ans and len(ans.filename) < 128 else b""
        return codec.pack_reply_header(req.xid, req.flags, ciaddr, yiaddr, siaddr, req.giaddr,
                                       req.chaddr, bootfile, req.htype, req.hlen)


class AuthoritativeEngine(_Base):
    """Hands out addresses from the pool; every ACK waits for its lease's commit."""

    tell_ipxe_no_proxydhcp = True

    def __init__(self, settings: DhcpSettings, *, decline_quarantine: float | None = None):
        super().__init__(settings)
        s = settings
        self.pool = LeasePool(ip_to_int(s.range_first), ip_to_int(s.range_last),
                              network=ip_to_int(s.server_ip), prefix=s.prefix,
                              server_ip=ip_to_int(s.server_ip), offer_hold=s.offer_hold_seconds)
        self._fixed_quarantine = decline_quarantine
        self.dirty: dict[int, Lease] = {}
        # conflict check: address -> True when something already answers on it (ping)
        self.probe: Callable[[str], bool] | None = None
        self._mt = {t: bytes((codec.OPT_MESSAGE_TYPE, 1, t)) for t in (OFFER, ACK, NAK)}
        self._nak_tail = self._server_id_opt
        self._encode_options(s)

    def _encode_options(self, s: DhcpSettings) -> None:
        """Option bytes computed once per settings."""
        self.quarantine = (self._fixed_quarantine if self._fixed_quarantine is not None
                           else s.lease_seconds)
        mask = (0xFFFFFFFF << (32 - s.prefix)) & 0xFFFFFFFF
        net = ipaddress.IPv4Network(f"{s.server_ip}/{s.prefix}", strict=False)
        common = [self._server_id_opt,
                  encode_option(codec.OPT_SUBNET_MASK, codec.u32(mask))]
        if s.router:
            common.append(encode_option(codec.OPT_ROUTER, codec.ip_bytes(s.router)))
        if s.dns_servers:
            common.append(encode_option(codec.OPT_DNS, b"".join(codec.ip_bytes(x) for x in s.dns_servers)))
        if s.domain:
            common.append(encode_option(codec.OPT_DOMAIN, s.domain.encode()))
        common.append(encode_option(codec.OPT_BROADCAST, codec.ip_bytes(str(net.broadcast_address))))
        self._common = b"".join(common)
        ls = s.lease_seconds
        self._times = (encode_option(codec.OPT_LEASE_TIME, codec.u32(ls))
                       + encode_option(codec.OPT_T1, codec.u32(ls // 2))
                       + encode_option(codec.OPT_T2, codec.u32(ls * 7 // 8)))

    def reconfigure(self, s: DhcpSettings) -> None:
        """The range, lease time, options and boot policy change; every lease is kept."""
        super().reconfigure(s)
        self.pool.set_range(ip_to_int(s.range_first), ip_to_int(s.range_last))
        self.pool.offer_hold = s.offer_hold_seconds
        self._encode_options(s)

    # -- state ------------------------------------------------------------------
    def load(self, records: list[LeaseRecord]) -> None:
        leases = []
        for r in records:
            cid = bytes.fromhex(r.client_id) if r.client_id else None
            mac = bytes.fromhex(r.mac.replace(":", ""))
            key = b"" if r.state == "declined" else client_key(cid, mac)
            leases.append(Lease(ip_to_int(r.ip), key, r.mac, cid, r.hostname, r.state,
                                r.starts, r.expires if r.state != "released" else min(r.expires, r.updated_at)))
        self.pool.load(leases)

    def set_hosts(self, hosts: dict[str, HostEntry]) -> None:
        self.hosts = hosts
        res = {}
        for mac, h in hosts.items():
            if h.ip_reservation:
                res[mac] = ip_to_int(h.ip_reservation)
        self.pool.set_reservations(res)

    def take_dirty(self, now: float) -> tuple[list[LeaseRecord], list[EventRecord]]:
        """The changed leases and waiting events, as rows to commit (and clears them)."""
        rows = [LeaseRecord(int_to_ip(le.ip), le.mac, le.client_id.hex() if le.client_id else None,
                            le.hostname, le.state, le.starts, le.expires, now)
                for le in self.dirty.values()]
        events, self.pending_events, self.dirty = self.pending_events, [], {}
        return rows, events

    def stats(self, now: float) -> dict[str, Any]:
        return {**self.counters.to_dict(), "pool": self.pool.stats(now)}

    # -- packets ----------------------------------------------------------------
    def handle(self, data: bytes, now: float) -> list[Reply]:
        fast = self._fast_path(data, now)
        if fast is not None:
            return fast
        req = self._parse(data)
        if req is None:
            return []
        if req.giaddr != ZERO and not self.pool.in_network(int.from_bytes(req.giaddr, "big")) \
                and req.giaddr != self.server_id:
            self.counters.dropped["relay_outside_network"] += 1
            return []
        mt = req.message_type
        if mt == DISCOVER:
            return self._discover(req, now)
        if mt == REQUEST:
            return self._request(req, now)
        if mt == RELEASE:
            self._release(req, now)
            return []
        if mt == DECLINE:
            self._decline(req, now)
            return []
        if mt == INFORM:
            return self._inform(req, now)
        self.counters.dropped["unexpected_type"] += 1
        return []

    # -- the fast path --------------------------------------------------------------
    # Most packets are a plain DISCOVER or a REQUEST in SELECTING state from an
    # Ethernet client with no relay, no PXE options and no option overload. Those
    # are answered here from a single scan of the options, with the reply built
    # from precomputed bytes. Anything else returns None and takes the general
    # path above, which parses fully (and counts what is malformed).
    _SLOW_OPTIONS = frozenset((codec.OPT_OVERLOAD, codec.OPT_VENDOR_CLASS, codec.OPT_USER_CLASS,
                               codec.OPT_IPXE_ENCAP, codec.OPT_RELAY_AGENT, codec.OPT_CLIENT_ARCH))

    def _fast_path(self, data: bytes, now: float) -> list[Reply] | None:
        n = len(data)
        if n < 244 or data[:3] != b"\x01\x01\x06" or data[236:240] != codec.MAGIC \
                or data[24:28] != ZERO or data[12:16] != ZERO:  # giaddr, ciaddr
            return None
        mt = req_ip = sid = cid = hostname = None
        slow = self._SLOW_OPTIONS
        i = 240
        while i < n:
            c = data[i]
            if c == 255:
                break
            if c == 0:
                i += 1
                continue
            if i + 1 >= n:
                return None
            j = i + 2 + data[i + 1]
            if j > n:
                return None
            v = data[i + 2 : j]
            if c == 53:
                if mt is not None or len(v) != 1:
                    return None
                mt = v[0]
            elif c == 50:
                if req_ip is not None or len(v) != 4:
                    return None
                req_ip = v
            elif c == 54:
                if sid is not None or len(v) != 4:
                    return None
                sid = v
            elif c == 61:
                if cid is not None:
                    return None
                cid = v or None
            elif c == 12:
                if hostname is not None:
                    return None
                hostname = v
            elif c in slow:
                return None
            i = j
        if mt == DISCOVER:
            return self._fast_discover(data, req_ip, cid, now)
        if mt == REQUEST and sid is not None and req_ip is not None:
            return self._fast_select(data, req_ip, sid, cid, hostname, now)
        return None

    def _fast_reply(self, data: bytes, mt: int, yiaddr: bytes, extra: bytes, durable: bool) -> Reply:
        body = b"".join((b"\x02\x01\x06\x00", data[4:8], b"\x00\x00", data[10:12], ZERO, yiaddr,
                         ZERO, ZERO, data[28:44], _SNAME_FILE, codec.MAGIC, self._mt[mt],
                         self._common, self._times, extra, b"\xff"))
        if len(body) < codec.MIN_PACKET:
            body += bytes(codec.MIN_PACKET - len(body))
        self.counters.sent[codec.MESSAGE_TYPE_NAMES[mt]] += 1
        if data[10] & 0x80:
            return Reply(body, BROADCAST_ADDR, CLIENT_PORT, None, durable)
        return Reply(body, codec.ip_str(yiaddr), CLIENT_PORT, data[28:34], durable)

    def _fast_discover(self, data: bytes, req_ip: bytes | None, cid: bytes | None, now: float
                       ) -> list[Reply]:
        self.counters.received["discover"] += 1
        mac_b = data[28:34]
        mac = mac_b.hex(":")
        lease = self._offer(cid or b"\x01" + mac_b, mac, cid,
                            int.from_bytes(req_ip, "big") if req_ip else None, now)
        if lease is None:
            self.counters.dropped["pool_exhausted"] += 1
            return []
        extra, _ = self._host_extra(mac)
        return [self._fast_reply(data, OFFER, lease.ip.to_bytes(4, "big"), extra, False)]

    def _fast_select(self, data: bytes, req_ip: bytes, sid: bytes, cid: bytes | None,
                     hostname_b: bytes | None, now: float) -> list[Reply] | None:
        if sid != self.server_id:
            return None
        mac_b = data[28:34]
        mac = mac_b.hex(":")
        key = cid or b"\x01" + mac_b
        ip = int.from_bytes(req_ip, "big")
        pool = self.pool
        if not pool.usable_by(ip, key, mac, now):
            return None  # the general path answers with a NAK
        self.counters.received["request"] += 1
        before = pool.by_ip.get(ip)
        was_bound = before is not None and before.key == key and before.state == BOUND \
            and before.expires > now
        hostname = hostname_b.rstrip(b"\0").decode("ascii", "replace") or None if hostname_b else None
        dirty = self.dirty
        for lease in pool.bind(key, mac, cid, ip, hostname, now, self.settings.lease_seconds):
            dirty[lease.ip] = lease
        extra, host = self._host_extra(mac)
        if not was_bound:
            ip_s = int_to_ip(ip)
            self.pending_events.append(EventRecord(
                "dhcp.lease", f"{ip_s} leased to {mac}" + (f" ({hostname})" if hostname else ""),
                now, host_id=host.id if host else None, mac=mac, ip=ip_s,
                data={"hostname": hostname} if hostname else None))
        return [self._fast_reply(data, ACK, req_ip, extra, True)]

    def _reply(self, req: Packet, mt: int, yiaddr: bytes, extra: bytes, *, durable: bool,
               ans: BootAnswer | None = None, ciaddr: bytes = ZERO, times: bool = True) -> Reply:
        body = [self._header(req, yiaddr, ciaddr, ans), self._mt[mt], self._common]
        if times:
            body.append(self._times)
        if extra:
            body.append(extra)
        if ans is not None:
            body.append(self._boot_options(ans))
        relay = req.options.get(codec.OPT_RELAY_AGENT)
        if relay is not None:
            body.append(encode_option(codec.OPT_RELAY_AGENT, relay))  # RFC 3046: echo it
        ip, port, arp = reply_destination(req, mt, yiaddr)
        self.counters.sent[codec.MESSAGE_TYPE_NAMES[mt]] += 1
        return Reply(codec.finish(b"".join(body)), ip, port, req.mac if arp else None, durable)

    def _nak(self, req: Packet, why: str) -> list[Reply]:
        body = (self._header(req, ZERO) + self._mt[NAK] + self._nak_tail
                + encode_option(codec.OPT_MESSAGE, why.encode()))
        relay = req.options.get(codec.OPT_RELAY_AGENT)
        if relay is not None:
            body += encode_option(codec.OPT_RELAY_AGENT, relay)
        ip, port, _ = reply_destination(req, NAK, ZERO)
        self.counters.sent["nak"] += 1
        return [Reply(codec.finish(body), ip, port, None, False)]

    def _host_extra(self, mac: str) -> tuple[bytes, HostEntry | None]:
        host = self.hosts.get(mac)
        if host is None:
            return b"", None
        return encode_option(codec.OPT_HOSTNAME, host.name.encode()), host

    def _offer(self, key: bytes, mac: str, cid: bytes | None, requested: int | None,
               now: float) -> Lease | None:
        """pool.offer, plus the optional conflict check: an address that answers a
        ping is quarantined like a declined one and the next one is tried."""
        for _ in range(4):
            before = self.pool.by_key.get(key)
            held = before is not None and before.state == "offered" and before.expires > now
            lease = self.pool.offer(key, mac, cid, requested, now)
            if lease is None or self.probe is None or lease.state != "offered":
                return lease
            if held and before is lease:
                return lease  # offered to this client already (a retransmitted DISCOVER)
            ip_s = int_to_ip(lease.ip)
            if not self.probe(ip_s):
                return lease
            self.pool.decline(key, mac, lease.ip, now, self.quarantine, by_client=False)
            self.dirty[lease.ip] = lease
            self.pending_events.append(EventRecord(
                "dhcp.conflict", f"{ip_s} answers on the network before being offered; "
                f"quarantined for {int(self.quarantine)} s", now, level="warning", ip=ip_s))
            self.counters.dropped["conflict"] += 1
            requested = None
        return None

    def _discover(self, req: Packet, now: float) -> list[Reply]:
        mac = req.mac_str
        key = client_key(req.client_id, req.mac)
        requested = req.requested_ip
        lease = self._offer(key, mac, req.client_id,
                            int.from_bytes(requested, "big") if requested else None, now)
        if lease is None:
            self.counters.dropped["pool_exhausted"] += 1
            return []
        extra, _host = self._host_extra(mac)
        ans, host = self._boot(req, now)
        yiaddr = lease.ip.to_bytes(4, "big")
        if ans is not None:
            self._boot_event(req, ans, host, int_to_ip(lease.ip), now)
        return [self._reply(req, OFFER, yiaddr, extra, durable=False, ans=ans)]

    def _request(self, req: Packet, now: float) -> list[Reply]:
        mac = req.mac_str
        key = client_key(req.client_id, req.mac)
        sid = req.server_id
        requested = req.requested_ip
        if sid is not None:  # SELECTING
            if sid != self.server_id:
                self.pool.forget_offer(key, now)
                self.counters.dropped["other_server_selected"] += 1
                return []
            if requested is None:
                return self._nak(req, "no requested address")
            ip = int.from_bytes(requested, "big")
            if not self.pool.usable_by(ip, key, mac, now):
                return self._nak(req, "address not available")
            return self._ack(req, key, mac, ip, now, ciaddr=ZERO)
        if requested is not None:  # INIT-REBOOT
            ip = int.from_bytes(requested, "big")
            if not self.pool.in_network(ip):
                return self._nak(req, "wrong network")
            if not self.pool.knows(key, mac):
                # RFC 2131 4.3.2: no record of this client, so stay silent (the client
                # falls back to DISCOVER); an ACK here would hand out any address asked for
                self.counters.dropped["init_reboot_unknown"] += 1
                return []
            if not self.pool.usable_by(ip, key, mac, now):
                return self._nak(req, "address not available")
            return self._ack(req, key, mac, ip, now, ciaddr=ZERO)
        if req.ciaddr != ZERO:  # RENEWING / REBINDING
            ip = int.from_bytes(req.ciaddr, "big")
            if not self.pool.knows(key, mac):
                self.counters.dropped["renew_unknown"] += 1  # as INIT-REBOOT: silence
                return []
            if not self.pool.usable_by(ip, key, mac, now):
                return self._nak(req, "address not available")
            return self._ack(req, key, mac, ip, now, ciaddr=req.ciaddr)
        self.counters.dropped["request_without_address"] += 1
        return []

    def _ack(self, req: Packet, key: bytes, mac: str, ip: int, now: float, *, ciaddr: bytes
             ) -> list[Reply]:
        before = self.pool.by_ip.get(ip)
        was_bound = before is not None and before.key == key and before.state == BOUND \
            and before.expires > now
        hostname = req.hostname
        for lease in self.pool.bind(key, mac, req.client_id, ip, hostname, now,
                                    self.settings.lease_seconds):
            self.dirty[lease.ip] = lease
        extra, host = self._host_extra(mac)
        ip_s = int_to_ip(ip)
        if not was_bound:
            self.pending_events.append(EventRecord(
                "dhcp.lease", f"{ip_s} leased to {mac}" + (f" ({hostname})" if hostname else ""),
                now, host_id=host.id if host else None, mac=mac, ip=ip_s,
                data={"hostname": hostname} if hostname else None))
        ans, bhost = self._boot(req, now)
        if ans is not None:
            self._boot_event(req, ans, bhost, ip_s, now)
        return [self._reply(req, ACK, ip.to_bytes(4, "big"), extra, durable=True, ans=ans,
                            ciaddr=ciaddr)]

    def _release(self, req: Packet, now: float) -> None:
        if req.server_id is not None and req.server_id != self.server_id:
            self.counters.dropped["other_server"] += 1
            return
        key = client_key(req.client_id, req.mac)
        ip = int.from_bytes(req.ciaddr, "big")
        lease = self.pool.release(key, ip, now)
        if lease is None:
            self.counters.dropped["release_unknown"] += 1
            return
        self.dirty[ip] = lease
        host = self.hosts.get(lease.mac)
        self.pending_events.append(EventRecord(
            "dhcp.release", f"{int_to_ip(ip)} released by {lease.mac}", now,
            host_id=host.id if host else None, mac=lease.mac, ip=int_to_ip(ip)))

    def _decline(self, req: Packet, now: float) -> None:
        if req.server_id is not None and req.server_id != self.server_id:
            self.counters.dropped["other_server"] += 1
            return
        requested = req.requested_ip
        if requested is None:
            self.counters.dropped["decline_without_address"] += 1
            return
        key = client_key(req.client_id, req.mac)
        ip = int.from_bytes(requested, "big")
        if self.pool.declines_held(req.mac_str, now) >= MAX_DECLINES_PER_CLIENT:
            self.counters.dropped["decline_over_limit"] += 1
            return
        lease = self.pool.decline(key, req.mac_str, ip, now, self.quarantine)
        if lease is None:  # not offered or leased to this client: nothing changes
            self.counters.dropped["decline_unknown"] += 1
            return
        self.dirty[ip] = lease
        host = self.hosts.get(req.mac_str)
        self.pending_events.append(EventRecord(
            "dhcp.decline", f"{int_to_ip(ip)} declined by {req.mac_str}: in use on the network; "
            f"quarantined for {int(self.quarantine)} s", now, level="warning",
            host_id=host.id if host else None, mac=req.mac_str, ip=int_to_ip(ip)))

    def _inform(self, req: Packet, now: float) -> list[Reply]:
        if req.ciaddr == ZERO:
            self.counters.dropped["inform_without_ciaddr"] += 1
            return []
        extra, _ = self._host_extra(req.mac_str)
        ans, host = self._boot(req, now)
        return [self._reply(req, ACK, ZERO, extra, durable=False, ans=ans, ciaddr=req.ciaddr,
                            times=False)]


class ProxyEngine(_Base):
    """proxyDHCP (PXE spec): boot information, no address, next to another DHCP
    server. On port 67 it answers DISCOVERs of PXE clients with an OFFER that
    carries only boot information; on port 4011 it answers the client's
    REQUEST (or INFORM) with an ACK carrying the same."""

    echo_pxeclient = True

    def handle(self, data: bytes, now: float, *, port: int = SERVER_PORT,
               src: tuple[str, int] | None = None) -> list[Reply]:
        req = self._parse(data)
        if req is None:
            return []
        mt = req.message_type
        if not is_pxe_client(req):
            self.counters.dropped["not_pxe"] += 1
            return []
        if port == SERVER_PORT and mt != DISCOVER:
            self.counters.dropped["not_for_proxy"] += 1
            return []
        if port == PXE_PORT and mt not in (REQUEST, INFORM):
            self.counters.dropped["unexpected_type"] += 1
            return []
        ans, host = self._boot(req, now)
        if ans is None:
            return []
        self._boot_event(req, ans, host, None, now)
        reply_type = OFFER if port == SERVER_PORT else ACK
        body = [self._header(req, ZERO, req.ciaddr if port == PXE_PORT else ZERO, ans),
                bytes((codec.OPT_MESSAGE_TYPE, 1, reply_type)), self._server_id_opt,
                self._boot_options(ans)]
        uuid = req.options.get(codec.OPT_CLIENT_UUID)
        if uuid is not None:
            body.append(encode_option(codec.OPT_CLIENT_UUID, uuid))
        self.counters.sent[codec.MESSAGE_TYPE_NAMES[reply_type]] += 1
        payload = codec.finish(b"".join(body))
        if port == PXE_PORT and src is not None and src[0] != "0.0.0.0":
            return [Reply(payload, src[0], src[1])]
        ip, dport, _ = reply_destination(req, reply_type, ZERO)
        return [Reply(payload, ip, dport)]

    def stats(self, now: float) -> dict[str, Any]:
        return self.counters.to_dict()
