"""DHCPv6 and RA test helpers: client messages as real clients send them, an engine
with test settings, and the fuzz entry points (`dhcp6_seeds`, `run_dhcp6`,
`ra_seeds`, `run_ra`) that the hypothesis tests and the 10^6-input fuzz bench use.

`run_dhcp6(engine, data)` / `run_ra(advertiser, data)` feed one datagram to what
the server loop calls and return True (answered), False (dropped and counted),
or raise: an exception, or a reply our own codec cannot read, is a bug.
"""

from __future__ import annotations

import ipaddress
import struct

from netservices.dhcp6 import codec as c6
from netservices.dhcp6.engine import Dhcp6Engine, Dhcp6Settings
from netservices.ra import codec as rac
from netservices.ra.engine import Advertiser, RaSettings

PREFIX = "fd00:77::/64"
SERVER_IP = "fd00:77::1"
SERVER_DUID = c6.duid_ll(bytes.fromhex("02aabbccdd01"))
CLIENT_LL = "fe80::1"
T0 = 1_700_000_000.0


def settings(**kw) -> Dhcp6Settings:
    base = dict(mode="stateful", interface="lan0", server_ip=SERVER_IP, prefix=PREFIX,
                range_first="fd00:77::1:0", range_last="fd00:77::1:ffff", server_duid=SERVER_DUID,
                dns_servers=(SERVER_IP,), domains=("lab.nixie",),
                boot_base_url="http://[fd00:77::1]:8081", tftp_server=SERVER_IP)
    base.update(kw)
    return Dhcp6Settings(**base)


def duid_llt(mac: str) -> bytes:
    return b"\x00\x01\x00\x01" + struct.pack("!I", 700000000) + bytes.fromhex(mac.replace(":", ""))


def ia_na(iaid: int, *addresses: str) -> bytes:
    body = b"".join(c6.encode_iaaddr(ipaddress.IPv6Address(a).packed, 0, 0) for a in addresses)
    return c6.encode_ia_na(iaid, 0, 0, body)


def message(mt: int, *, duid: bytes | None, xid: bytes = b"\x01\x02\x03", ias: list[bytes] = (),
            server_duid: bytes | None = None, rapid: bool = False, oro: tuple[int, ...] = (23, 24),
            extra: list[tuple[int, bytes]] = ()) -> bytes:
    opts = []
    if duid is not None:
        opts.append(c6.option(c6.OPT_CLIENTID, duid))
    if server_duid is not None:
        opts.append(c6.option(c6.OPT_SERVERID, server_duid))
    opts.append(c6.option(c6.OPT_ELAPSED_TIME, b"\0\0"))
    if oro:
        opts.append(c6.option(c6.OPT_ORO, struct.pack(f"!{len(oro)}H", *oro)))
    if rapid:
        opts.append(c6.option(c6.OPT_RAPID_COMMIT, b""))
    opts += list(ias)
    opts += [c6.option(k, v) for k, v in extra]
    return bytes((mt,)) + xid + b"".join(opts)


def relay_forw(inner: bytes, *, link: str = "fd00:77::", peer: str = "fe80::5054:ff:fe12:3456",
               hops: int = 0, interface_id: bytes | None = b"eth7") -> bytes:
    opts = [(c6.OPT_RELAY_MSG, inner)]
    if interface_id is not None:
        opts.append((c6.OPT_INTERFACE_ID, interface_id))
    return c6.RelayMessage(c6.RELAY_FORW, hops, ipaddress.IPv6Address(link).packed,
                           ipaddress.IPv6Address(peer).packed, opts).encode()


def reply_of(payload: bytes) -> c6.Message:
    m = c6.parse(payload)
    while isinstance(m, c6.RelayMessage):
        m = m.inner
    return m


def addresses_of(reply: c6.Message) -> list[tuple[int, str, int]]:
    """(iaid, address, valid) of every IAADDR in the reply."""
    return [(ia.iaid, str(ipaddress.IPv6Address(a.address)), a.valid)
            for ia in reply.ia_nas for a in ia.addresses]


# ---------------------------------------------------------------- fuzz entry points

def dhcp6_seeds() -> list[bytes]:
    """Well-formed messages of every kind a client or relay sends."""
    d = duid_llt("52:54:00:12:34:56")
    pxe = [(c6.OPT_CLIENT_ARCH_TYPE, b"\x00\x07"),
           (c6.OPT_VENDOR_CLASS, struct.pack("!I", 343) + c6.encode_classes([b"HTTPClient"])),
           (c6.OPT_USER_CLASS, c6.encode_classes([b"iPXE"]))]
    return [
        message(c6.SOLICIT, duid=d, ias=[ia_na(1)]),
        message(c6.SOLICIT, duid=d, ias=[ia_na(1)], rapid=True, extra=pxe[:1]),
        message(c6.SOLICIT, duid=d, ias=[ia_na(2)], extra=pxe[:2]),
        message(c6.REQUEST, duid=d, server_duid=SERVER_DUID, ias=[ia_na(1, "fd00:77::1:0")]),
        message(c6.RENEW, duid=d, server_duid=SERVER_DUID, ias=[ia_na(1, "fd00:77::1:0")]),
        message(c6.REBIND, duid=d, ias=[ia_na(1, "fd00:77::1:0")]),
        message(c6.CONFIRM, duid=d, ias=[ia_na(1, "fd00:77::1:0")]),
        message(c6.RELEASE, duid=d, server_duid=SERVER_DUID, ias=[ia_na(1, "fd00:77::1:0")]),
        message(c6.DECLINE, duid=d, server_duid=SERVER_DUID, ias=[ia_na(1, "fd00:77::1:1")]),
        message(c6.INFORMATION_REQUEST, duid=d, extra=pxe[2:]),
        relay_forw(message(c6.SOLICIT, duid=d, ias=[ia_na(3)], rapid=True)),
        relay_forw(relay_forw(message(c6.INFORMATION_REQUEST, duid=d), hops=0), hops=1),
    ]


def new_engine() -> Dhcp6Engine:
    return Dhcp6Engine(settings(), decline_quarantine=60)


def run_dhcp6(engine: Dhcp6Engine, data: bytes, src: str = CLIENT_LL, now: float = T0) -> bool:
    """One datagram through the engine, as the loop runs it; every reply must parse."""
    dropped = sum(engine.counters.dropped.values())
    replies = engine.handle(data, src, now)
    for r in replies:
        reply_of(r.payload)  # raises on a reply our codec cannot read
    engine.take_dirty(now)
    if not replies:
        if sum(engine.counters.dropped.values()) != dropped + 1:
            raise AssertionError("a message got no reply and was not counted as dropped")
        return False
    return True


def ra_seeds() -> list[bytes]:
    return [bytes((133, 0, 0, 0, 0, 0, 0, 0)),
            bytes((133, 0, 0, 0, 0, 0, 0, 0, 1, 1)) + bytes.fromhex("525400123456"),
            rac.encode_ra(ra_settings().advert())]


def ra_settings(**kw) -> RaSettings:
    base = dict(interface="lan0", prefix=PREFIX, managed=True, other=True, rdnss=(SERVER_IP,),
                dnssl=("lab.nixie",), mtu=1500, source_mac=bytes.fromhex("02aabbccdd01"))
    base.update(kw)
    return RaSettings(**base)


def run_ra(adv: Advertiser, data: bytes, src: str = CLIENT_LL, now: float = 100.0) -> bool:
    """One datagram through what the RA loop runs for a received packet."""
    dropped = sum(adv.counters["dropped"].values())
    received = adv.counters["received"]["rs"]
    dst = adv.on_solicit(data, src, 255, now)
    if dst is not None:
        rac.parse_ra(adv.payload)
    if adv.counters["received"]["rs"] == received:
        if sum(adv.counters["dropped"].values()) != dropped + 1:
            raise AssertionError("a packet was neither answered nor counted as dropped")
        return False
    return True


def put_lease6(conn, address: str, mac: str | None, *, hostname: str | None = None,
               state: str = "bound", duid: str | None = None, iaid: int = 1,
               starts: float = 0.0, expires: float = 9e9, updated_at: float | None = None) -> None:
    """A leases6 row as the DHCPv6 service stores it, for tests that start from the state
    DB rather than the wire. `duid` defaults to "0003" + the MAC's hex (as DUID-LL)."""
    conn.execute("INSERT OR REPLACE INTO leases6 (address, duid, iaid, mac, hostname, state, "
                 "starts, expires, updated_at, host_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                 "(SELECT host_id FROM host_macs WHERE mac = ?))",
                 (address, duid if duid is not None else "0003" + mac.replace(":", ""), iaid, mac,
                  hostname, state, starts, expires, starts if updated_at is None else updated_at,
                  mac))
