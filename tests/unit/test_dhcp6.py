"""DHCPv6: the codec, the engine (stateful, stateless, relays, rapid commit,
reservations, boot URLs) and fuzzing of both."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netservices.dhcp6 import codec as c6
from netservices.dhcp6.engine import Dhcp6Engine
from netservices.dhcp6.store import Host6Entry
from tests.dhcp6_helpers import (
    CLIENT_LL,
    SERVER_DUID,
    T0,
    addresses_of,
    dhcp6_seeds,
    duid_llt,
    ia_na,
    message,
    new_engine,
    relay_forw,
    reply_of,
    run_dhcp6,
)
from tests.dhcp6_helpers import settings as s6

MAC = "52:54:00:12:34:56"
DUID = duid_llt(MAC)


def one(engine: Dhcp6Engine, data: bytes, now: float = T0, src: str = CLIENT_LL):
    replies = engine.handle(data, src, now)
    assert len(replies) == 1, engine.counters.to_dict()
    return replies[0], reply_of(replies[0].payload)


def test_codec_round_trip_and_accessors():
    data = message(c6.SOLICIT, duid=DUID, ias=[ia_na(7, "fd00:77::1:5")], rapid=True,
                   extra=[(c6.OPT_CLIENT_ARCH_TYPE, b"\x00\x10"),
                          (c6.OPT_USER_CLASS, c6.encode_classes([b"iPXE"])),
                          (c6.OPT_VENDOR_CLASS, struct.pack("!I", 343)
                           + c6.encode_classes([b"HTTPClient:Arch:00016"]))])
    m = c6.parse(data)
    assert m.msg_type == c6.SOLICIT and m.xid == b"\x01\x02\x03"
    assert m.client_id == DUID and m.server_id is None and m.has(c6.OPT_RAPID_COMMIT)
    assert [(ia.iaid, ia.addresses[0].address) for ia in m.ia_nas] == [
        (7, ipaddress.IPv6Address("fd00:77::1:5").packed)]
    assert m.oro == [23, 24] and m.client_arches == [16]
    assert m.user_classes == [b"iPXE"] and m.vendor_classes == [b"HTTPClient:Arch:00016"]
    assert m.encode() == data
    assert c6.mac_from_duid(DUID).hex(":") == MAC
    assert c6.mac_from_link_local(ipaddress.IPv6Address("fe80::5054:ff:fe12:3456").packed
                                  ).hex(":") == MAC
    assert c6.decode_domains(c6.encode_domains(["lab.nixie", "a.b"])) == ["lab.nixie", "a.b"]


def test_codec_rejects_truncated_and_nested_too_deep():
    for bad in (b"", b"\x01\x02", b"\x01\x00\x00\x00\x00\x01\x00\x05ab",
                bytes((c6.RELAY_FORW, 0)) + bytes(31), b"\x00\x00\x00\x00", b"\x0e\x00\x00\x00"):
        try:
            c6.parse(bad)
        except c6.MalformedPacket:
            continue
        raise AssertionError(f"{bad!r} parsed")
    inner = message(c6.SOLICIT, duid=DUID)
    for _ in range(c6.HOP_COUNT_LIMIT + 1):
        inner = relay_forw(inner)
    try:
        c6.parse(inner)
    except c6.MalformedPacket as e:
        assert "deep" in str(e)
    else:
        raise AssertionError("nine nested relays parsed")


def test_four_message_exchange_binds_and_renews_the_same_address():
    e = new_engine()
    adv, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)]))
    assert m.msg_type == c6.ADVERTISE and not adv.durable and adv.port == 546
    assert m.get(c6.OPT_PREFERENCE) == b"\xff" and m.client_id == DUID
    assert m.server_id == SERVER_DUID
    [(iaid, addr, valid)] = addresses_of(m)
    assert iaid == 1 and addr == "fd00:77::1:0" and valid == 7200
    assert not e.dirty  # an offer is not stored
    rep, m = one(e, message(c6.REQUEST, duid=DUID, server_duid=SERVER_DUID, ias=[ia_na(1, addr)]))
    assert m.msg_type == c6.REPLY and rep.durable
    assert addresses_of(m) == [(1, addr, 7200)]
    assert m.get(c6.OPT_DNS_SERVERS) == ipaddress.IPv6Address("fd00:77::1").packed
    assert c6.decode_domains(m.get(c6.OPT_DOMAIN_LIST)) == ["lab.nixie"]
    rows, events = e.take_dirty(T0)
    assert [(r.address, r.duid, r.iaid, r.mac, r.state) for r in rows] == [
        (addr, DUID.hex(), 1, MAC, "bound")]
    assert [ev.kind for ev in events] == ["dhcp6.lease"]
    _, m = one(e, message(c6.RENEW, duid=DUID, server_duid=SERVER_DUID, ias=[ia_na(1, addr)]),
               now=T0 + 3000)
    assert addresses_of(m) == [(1, addr, 7200)]
    rows, events = e.take_dirty(T0)
    assert rows[0].expires == T0 + 3000 + 7200 and events == []  # a renewal is no new lease


def test_rapid_commit_replies_at_once_and_holds_for_the_commit():
    e = new_engine()
    rep, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], rapid=True))
    assert m.msg_type == c6.REPLY and m.has(c6.OPT_RAPID_COMMIT) and rep.durable
    assert addresses_of(m) == [(1, "fd00:77::1:0", 7200)]
    assert list(e.dirty) == [int(ipaddress.IPv6Address("fd00:77::1:0"))]
    e2 = Dhcp6Engine(s6(rapid_commit=False))
    _, m = one(e2, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], rapid=True))
    assert m.msg_type == c6.ADVERTISE and not m.has(c6.OPT_RAPID_COMMIT)


def test_distinct_clients_and_ias_get_distinct_addresses_and_others_keep_theirs():
    e = new_engine()
    got = set()
    for i in range(50):
        d = duid_llt(f"52:54:00:00:00:{i:02x}")
        _, m = one(e, message(c6.SOLICIT, duid=d, ias=[ia_na(1), ia_na(2)], rapid=True))
        got |= {a for _, a, _ in addresses_of(m)}
    assert len(got) == 100
    # a client asking for another client's address gets its own, and the other is zeroed
    other = "fd00:77::1:0"
    _, m = one(e, message(c6.REQUEST, duid=duid_llt("52:54:00:00:99:99"), server_duid=SERVER_DUID,
                          ias=[ia_na(1, other)]))
    addrs = addresses_of(m)
    assert (1, other, 0) in addrs and any(v == 7200 and a != other for _, a, v in addrs)


def test_release_frees_and_decline_quarantines():
    e = new_engine()
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], rapid=True))
    addr = addresses_of(m)[0][1]
    e.take_dirty(T0)
    rep, m = one(e, message(c6.RELEASE, duid=DUID, server_duid=SERVER_DUID, ias=[ia_na(1, addr)]))
    assert rep.durable and c6.parse_status(m.get(c6.OPT_STATUS_CODE))[0] == c6.SUCCESS
    rows, _ = e.take_dirty(T0)
    assert [r.state for r in rows] == ["released"]
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], rapid=True))
    assert addresses_of(m)[0][1] == addr
    one(e, message(c6.DECLINE, duid=DUID, server_duid=SERVER_DUID, ias=[ia_na(1, addr)]))
    _, m = one(e, message(c6.SOLICIT, duid=duid_llt("52:54:00:00:00:01"), ias=[ia_na(1)],
                          rapid=True))
    assert addresses_of(m)[0][1] != addr


def test_messages_for_another_server_or_without_client_id_are_dropped():
    e = new_engine()
    for data, why in [
        (message(c6.REQUEST, duid=DUID, server_duid=b"\0\3\0\1abcdef", ias=[ia_na(1)]),
         "other_server"),
        (message(c6.SOLICIT, duid=None, ias=[ia_na(1)]), "no_client_id"),
        (message(c6.SOLICIT, duid=DUID, server_duid=SERVER_DUID), "server_id_not_allowed"),
        (message(c6.ADVERTISE, duid=DUID), "not_for_server"),
        (message(c6.INFORMATION_REQUEST, duid=DUID, ias=[ia_na(1)]), "ia_in_information_request"),
        (b"\x01\x02", "malformed"),
    ]:
        assert not run_dhcp6(e, data)
        assert e.counters.dropped[why] >= 1, why


def test_stateless_mode_answers_information_requests_only():
    e = Dhcp6Engine(s6(mode="stateless"))
    assert not run_dhcp6(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)]))
    assert e.counters.dropped["stateless_mode"] == 1
    rep, m = one(e, message(c6.INFORMATION_REQUEST, duid=DUID))
    assert not rep.durable and m.msg_type == c6.REPLY and not m.ia_nas
    assert m.get(c6.OPT_DNS_SERVERS) == ipaddress.IPv6Address("fd00:77::1").packed
    assert struct.unpack("!I", m.get(c6.OPT_INFORMATION_REFRESH_TIME))[0] == 86400


def test_relayed_solicit_is_answered_through_the_relay_with_its_interface_id():
    e = new_engine()
    inner = message(c6.SOLICIT, duid=b"\0\4" + bytes(16), ias=[ia_na(1)], rapid=True)
    lla = (c6.OPT_CLIENT_LINKLAYER_ADDR, b"\x00\x01" + bytes.fromhex("525400abcdef"))
    data = c6.RelayMessage(c6.RELAY_FORW, 0, ipaddress.IPv6Address("fd00:77::").packed,
                           ipaddress.IPv6Address("fe80::9").packed,
                           [(c6.OPT_RELAY_MSG, inner), (c6.OPT_INTERFACE_ID, b"port3"), lla]
                           ).encode()
    [r] = e.handle(data, "fd00:77::2", T0)
    assert (r.ip, r.port, r.durable) == ("fd00:77::2", 547, True)
    outer = c6.parse(r.payload)
    assert outer.msg_type == c6.RELAY_REPL and outer.get(c6.OPT_INTERFACE_ID) == b"port3"
    assert outer.peer_address == ipaddress.IPv6Address("fe80::9").packed
    assert addresses_of(outer.inner)[0][1] == "fd00:77::1:0"
    rows, _ = e.take_dirty(T0)
    assert rows[0].mac == "52:54:00:ab:cd:ef"  # from the relay's option 79
    # two relays deep: both layers come back
    [r] = e.handle(relay_forw(relay_forw(message(c6.INFORMATION_REQUEST, duid=DUID)), hops=1),
                   "fd00:77::3", T0)
    outer = c6.parse(r.payload)
    assert outer.msg_type == c6.RELAY_REPL and outer.inner.msg_type == c6.RELAY_REPL
    assert outer.inner.inner.msg_type == c6.REPLY
    assert not run_dhcp6(e, relay_forw(message(c6.SOLICIT, duid=DUID), link="2001:db8::"))
    assert e.counters.dropped["relay_outside_network"] == 1


def test_reservation_by_mac_from_the_duid():
    e = new_engine()
    e.set_hosts({MAC: Host6Entry(1, "web1", "fd00:77::beef")})
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], rapid=True))
    assert addresses_of(m)[0][1] == "fd00:77::beef"
    _, m = one(e, message(c6.SOLICIT, duid=duid_llt("52:54:00:00:00:07"),
                          ias=[ia_na(1, "fd00:77::beef")], rapid=True))
    assert addresses_of(m)[0][1] != "fd00:77::beef"


def _boot_url(m: c6.Message) -> str | None:
    v = m.get(c6.OPT_BOOTFILE_URL)
    return v.decode() if v is not None else None


def test_boot_urls_by_architecture_and_class():
    e = new_engine()
    arch = lambda n: (c6.OPT_CLIENT_ARCH_TYPE, struct.pack("!H", n))  # noqa: E731
    http = (c6.OPT_VENDOR_CLASS, struct.pack("!I", 343)
            + c6.encode_classes([b"HTTPClient:Arch:00016:UNDI:003001"]))
    ipxe = (c6.OPT_USER_CLASS, c6.encode_classes([b"iPXE"]))
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], extra=[arch(7)]))
    assert _boot_url(m) == "tftp://[fd00:77::1]/snponly.efi" and not m.has(c6.OPT_VENDOR_CLASS)
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], extra=[arch(9)]))
    assert _boot_url(m) == "tftp://[fd00:77::1]/snponly.efi"  # x64 EFI, the older number
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], extra=[arch(16), http]))
    assert _boot_url(m) == "http://[fd00:77::1]:8081/ipxe/snponly.efi"
    assert m.vendor_classes == [b"HTTPClient"]
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], extra=[arch(7), ipxe]))
    assert _boot_url(m) == f"http://[fd00:77::1]:8081/boot/{MAC}.ipxe"  # no chainload loop
    _, m = one(e, message(c6.INFORMATION_REQUEST, duid=DUID, extra=[ipxe]))
    assert _boot_url(m) == f"http://[fd00:77::1]:8081/boot/{MAC}.ipxe"
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)]))
    assert _boot_url(m) is None
    assert e.counters.boot == {"tftp": 2, "http": 1, "script": 2}
    quiet = Dhcp6Engine(s6(unknown_clients="ignore"))
    _, m = one(quiet, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], extra=[arch(7)]))
    assert _boot_url(m) is None
    quiet.set_hosts({MAC: Host6Entry(3, "known")})
    _, m = one(quiet, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], extra=[arch(7)]))
    assert _boot_url(m) == "tftp://[fd00:77::1]/snponly.efi"


def test_reconfigure_keeps_bindings_and_loaded_leases_are_honoured():
    e = new_engine()
    _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], rapid=True))
    addr = addresses_of(m)[0][1]
    rows, _ = e.take_dirty(T0)
    e.reconfigure(s6(valid_seconds=600, preferred_seconds=300))
    _, m = one(e, message(c6.RENEW, duid=DUID, server_duid=SERVER_DUID, ias=[ia_na(1, addr)]))
    assert addresses_of(m) == [(1, addr, 600)]
    fresh = new_engine()
    fresh.load(rows)
    _, m = one(fresh, message(c6.SOLICIT, duid=duid_llt("52:54:00:00:00:08"), ias=[ia_na(1)],
                              rapid=True))
    assert addresses_of(m)[0][1] != addr  # the loaded binding is held
    _, m = one(fresh, message(c6.REBIND, duid=DUID, ias=[ia_na(1, addr)]))
    assert addresses_of(m) == [(1, addr, 7200)]


# ---------------------------------------------------------------- fuzzing

@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_are_dropped_and_counted(data):
    e = new_engine()
    run_dhcp6(e, data)


SEEDS = dhcp6_seeds()


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 599), st.integers(0, 255)),
                                        max_size=6), st.integers(0, 600))
def test_fuzz_mutated_real_messages(seed, flips, cut):
    b = bytearray(seed)
    for pos, val in flips:
        if pos < len(b):
            b[pos] = val
    e = new_engine()
    for s in SEEDS[:4]:
        run_dhcp6(e, s)
    run_dhcp6(e, bytes(b[:cut]) if cut < len(b) else bytes(b))


def test_no_boot_url_for_a_service_that_does_not_listen_on_ipv6():
    arch7 = [(c6.OPT_CLIENT_ARCH_TYPE, b"\x00\x07")]
    ipxe = [(c6.OPT_USER_CLASS, c6.encode_classes([b"iPXE"]))]
    e = Dhcp6Engine(s6(tftp_server="", boot_base_url=""))
    for extra in (arch7, ipxe):
        _, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)], extra=extra))
        assert _boot_url(m) is None and addresses_of(m)


# ------------------------------------------------------------- the fast path

def _state(e: Dhcp6Engine, now: float):
    rows, events = e.take_dirty(now)
    return (sorted((r.address, r.duid, r.iaid, r.mac, r.hostname, r.state, r.starts, r.expires)
                   for r in rows),
            [(x.kind, x.message, x.host_id, x.mac, x.ip, x.data) for x in events])


_MACS = [f"52:54:00:00:00:{i:02x}" for i in range(4)]


@st.composite
def _exchange(draw):
    """A client message the fast path may take (or must refuse): SOLICIT with or without
    rapid commit and hints, REQUEST of an address, for a server id (ours or another)."""
    mac = draw(st.sampled_from(_MACS))
    duid = draw(st.sampled_from([duid_llt(mac), c6.duid_ll(bytes.fromhex(mac.replace(":", ""))),
                                 b"\x00\x02" + b"x" * 10]))
    mt = draw(st.sampled_from([c6.SOLICIT, c6.REQUEST]))
    addr = draw(st.sampled_from([None, "fd00:77::1:0", "fd00:77::1:1", "fd00:77::1:7",
                                 "fd00:78::1", "fd00:77::2"]))
    iaid = draw(st.integers(0, 2))
    ias = [ia_na(iaid, *([addr] if addr else []))] if draw(st.booleans()) or mt == c6.REQUEST \
        else []
    sid = SERVER_DUID if mt == c6.REQUEST and draw(st.integers(0, 4)) else (
        None if mt == c6.SOLICIT and draw(st.integers(0, 4)) else b"\x00\x03\x00\x01other1")
    extra = draw(st.sampled_from([[], [], [(c6.OPT_CLIENT_FQDN, b"\x00\x03box\x00")],
                                  [(c6.OPT_CLIENT_ARCH_TYPE, b"\x00\x07")]]))
    return message(mt, duid=duid, server_duid=sid, ias=ias, rapid=draw(st.booleans()),
                   extra=extra, xid=bytes(draw(st.binary(min_size=3, max_size=3)))), \
        draw(st.sampled_from(["fe80::1", "fe80::5054:ff:fe00:2"])), draw(st.integers(0, 50))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_exchange(), min_size=1, max_size=30), st.booleans())
def test_fast_path_answers_byte_for_byte_like_the_general_path(steps, rapid_allowed):
    """Two engines, the fast path on in one and off in the other, see the same
    messages: every reply, every stored row, every event and counter is the same."""
    fast, slow = (Dhcp6Engine(s6(rapid_commit=rapid_allowed), decline_quarantine=60)
                  for _ in range(2))
    slow.fast = False
    hosts = {_MACS[1]: Host6Entry(5, "res", "fd00:77::1:7")}
    for e in (fast, slow):
        e.set_hosts(hosts)
    for data, src, dt in steps:
        now = T0 + dt
        a, b = fast.handle(data, src, now), slow.handle(data, src, now)
        assert [(r.payload, r.ip, r.port, r.durable) for r in a] == \
            [(r.payload, r.ip, r.port, r.durable) for r in b]
        assert _state(fast, now) == _state(slow, now)
    assert fast.counters.to_dict() == slow.counters.to_dict()


def test_fast_path_takes_the_common_exchange():
    e = new_engine()
    calls = []
    general = e._answer
    e._answer = lambda *a: calls.append(a) or general(*a)
    r, m = one(e, message(c6.SOLICIT, duid=DUID, ias=[ia_na(1)]))
    addr = addresses_of(m)[0][1]
    one(e, message(c6.REQUEST, duid=DUID, server_duid=SERVER_DUID, ias=[ia_na(1, addr)]))
    one(e, message(c6.SOLICIT, duid=duid_llt("52:54:00:00:00:09"), ias=[ia_na(1)], rapid=True))
    assert calls == []  # none of them took the general path
    one(e, message(c6.RENEW, duid=DUID, server_duid=SERVER_DUID, ias=[ia_na(1, addr)]))
    assert len(calls) == 1
