"""The DHCP protocol engine without sockets, and the SQLite lease store under it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from appliance.domain import hosts
from appliance.domain.lease_store import SqliteLeaseStore
from appliance.state.db import Store
from netservices.dhcp import codec
from netservices.dhcp.codec import ACK, DECLINE, DISCOVER, INFORM, NAK, OFFER, RELEASE, REQUEST
from netservices.dhcp.engine import (
    AuthoritativeEngine,
    DhcpSettings,
    ProxyEngine,
    reply_destination,
)
from netservices.dhcp.store import HostEntry
from tests.dhcp_helpers import client_packet

SERVER = codec.ip_bytes("10.77.0.1")


def settings(**kw) -> DhcpSettings:
    base = dict(mode="authoritative", interface="br-lan", server_ip="10.77.0.1", prefix=24,
                range_first="10.77.0.100", range_last="10.77.0.109", lease_seconds=600,
                router="10.77.0.1", dns_servers=("10.77.0.1",), domain="lab.nixie",
                boot_base_url="http://10.77.0.1:8081")
    base.update(kw)
    return DhcpSettings(**base)


def mac(i: int) -> str:
    return f"52:54:00:00:01:{i:02x}"


def one(replies):
    assert len(replies) == 1, replies
    return replies[0], codec.parse(replies[0].payload)


def dora(engine, m, now=1000.0, **opts):
    r, offer = one(engine.handle(client_packet(DISCOVER, m, 7, **opts), now))
    assert offer.message_type == OFFER and not r.durable
    r, ack = one(engine.handle(client_packet(REQUEST, m, 7, opt50=offer.yiaddr, opt54=SERVER, **opts), now))
    assert ack.message_type == ACK and r.durable
    return codec.ip_str(ack.yiaddr), ack, r


def test_full_exchange_gives_an_address_and_the_options():
    e = AuthoritativeEngine(settings())
    ip, ack, reply = dora(e, mac(1), opt12=b"box1")
    assert ip == "10.77.0.100"
    o = ack.options
    assert o[codec.OPT_SERVER_ID] == SERVER and o[codec.OPT_SUBNET_MASK] == codec.ip_bytes("255.255.255.0")
    assert int.from_bytes(o[codec.OPT_LEASE_TIME], "big") == 600
    assert int.from_bytes(o[codec.OPT_T1], "big") == 300 and int.from_bytes(o[codec.OPT_T2], "big") == 525
    assert o[codec.OPT_ROUTER] == SERVER and o[codec.OPT_DNS] == SERVER and o[codec.OPT_DOMAIN] == b"lab.nixie"
    # no broadcast flag, no ciaddr: unicast to yiaddr with an ARP entry for chaddr
    assert (reply.ip, reply.port, reply.arp_mac) == (ip, 68, bytes.fromhex("525400000101"))
    rows, events = e.take_dirty(1000.0)
    assert [(r.ip, r.mac, r.state, r.hostname, r.expires) for r in rows] == [
        ("10.77.0.100", mac(1), "bound", "box1", 1600.0)]
    assert [ev.kind for ev in events] == ["dhcp.lease"] and events[0].ip == ip
    assert e.take_dirty(1000.0) == ([], [])


def test_offers_are_held_so_two_clients_never_share_an_address():
    e = AuthoritativeEngine(settings())
    offers = [codec.parse(one(e.handle(client_packet(DISCOVER, mac(i), i), 1000.0))[0].payload).yiaddr
              for i in range(10)]
    assert len(set(offers)) == 10
    # pool of 10 exhausted while the offers are held; counted, no answer
    assert e.handle(client_packet(DISCOVER, mac(11), 11), 1001.0) == []
    assert e.counters.dropped["pool_exhausted"] == 1
    # after the hold, unanswered offers are reusable
    _, o = one(e.handle(client_packet(DISCOVER, mac(11), 11), 1031.0))
    assert o.yiaddr in offers


def test_request_for_another_clients_address_is_naked():
    e = AuthoritativeEngine(settings())
    ip, *_ = dora(e, mac(1))
    r, nak = one(e.handle(client_packet(REQUEST, mac(2), 9, opt50=codec.ip_bytes(ip), opt54=SERVER), 1001.0))
    assert nak.message_type == NAK and r.ip == "255.255.255.255" and not r.durable
    assert e.counters.sent["nak"] == 1


def test_init_reboot_renew_and_rebind_keep_the_address():
    e = AuthoritativeEngine(settings())
    ip, *_ = dora(e, mac(1))
    # INIT-REBOOT: requested address, no server id
    _, ack = one(e.handle(client_packet(REQUEST, mac(1), 8, opt50=codec.ip_bytes(ip)), 1100.0))
    assert ack.message_type == ACK and codec.ip_str(ack.yiaddr) == ip
    # RENEWING: ciaddr, unicast back to ciaddr
    r, ack = one(e.handle(client_packet(REQUEST, mac(1), 9, ciaddr=ip), 1300.0))
    assert ack.message_type == ACK and (r.ip, r.port, r.arp_mac) == (ip, 68, None)
    assert ack.ciaddr == codec.ip_bytes(ip)
    rows, events = e.take_dirty(1300.0)
    assert rows[-1].expires == 1900.0
    assert events[0].kind == "dhcp.lease" and len(events) == 1  # renewals are not new events
    # INIT-REBOOT into a foreign network is NAKed
    _, nak = one(e.handle(client_packet(REQUEST, mac(1), 10, opt50=codec.ip_bytes("192.168.1.5")), 1301.0))
    assert nak.message_type == NAK


def test_client_id_identifies_the_client_across_macs():
    e = AuthoritativeEngine(settings())
    ip, *_ = dora(e, mac(1), opt61=b"\xffmy-duid")
    _, ack = one(e.handle(client_packet(REQUEST, mac(9), 2, ciaddr=ip, opt61=b"\xffmy-duid"), 1100.0))
    assert ack.message_type == ACK
    rows, _ = e.take_dirty(1100.0)
    assert rows[-1].client_id == b"\xffmy-duid".hex()


def test_release_then_reuse_oldest_first():
    e = AuthoritativeEngine(settings(range_last="10.77.0.101"))
    a, *_ = dora(e, mac(1), 1000.0)
    b, *_ = dora(e, mac(2), 1000.0)
    e.handle(client_packet(RELEASE, mac(2), 3, ciaddr=b, opt54=SERVER), 1010.0)
    e.handle(client_packet(RELEASE, mac(1), 3, ciaddr=a, opt54=SERVER), 1020.0)
    rows, events = e.take_dirty(1020.0)
    assert {r.state for r in rows} == {"released"}
    assert [ev.kind for ev in events][-2:] == ["dhcp.release", "dhcp.release"]
    # a new client gets the address released longest ago
    c, *_ = dora(e, mac(3), 1030.0)
    assert c == b


def test_decline_quarantines_the_address_until_nothing_else_is_free():
    e = AuthoritativeEngine(settings(range_last="10.77.0.101"), decline_quarantine=100)
    ip, *_ = dora(e, mac(1))
    e.handle(client_packet(DECLINE, mac(1), 4, opt50=codec.ip_bytes(ip), opt54=SERVER), 1001.0)
    rows, events = e.take_dirty(1001.0)
    assert rows[0].state == "declined" and events[-1].kind == "dhcp.decline"
    assert events[-1].level == "warning"
    other, *_ = dora(e, mac(2), 1010.0)  # the quarantined address is skipped
    assert other == "10.77.0.101"
    # nothing else is free: the quarantine yields rather than the pool running dry
    _, o = one(e.handle(client_packet(DISCOVER, mac(3), 5), 1050.0))
    assert codec.ip_str(o.yiaddr) == ip


def test_forged_declines_and_unknown_init_reboots_do_not_drain_the_pool():
    """Finding 3: a DECLINE for an address never offered to its sender, and an
    INIT-REBOOT or RENEW from a client the server has no record of, change nothing
    and get no answer; a client may quarantine at most two addresses at a time."""
    e = AuthoritativeEngine(settings(), decline_quarantine=3600)
    now = 1000.0
    for i in range(100):
        ip = codec.ip_bytes(f"10.77.0.{100 + i % 10}")
        forged = [f"52:54:00:0{k}:00:{i:02x}" for k in (2, 3, 4)]
        assert e.handle(client_packet(DECLINE, forged[0], i, opt50=ip, opt54=SERVER), now) == []
        assert e.handle(client_packet(REQUEST, forged[1], i, opt50=ip), now) == []
        assert e.handle(client_packet(REQUEST, forged[2], i, ciaddr=codec.ip_str(ip)), now) == []
    assert e.take_dirty(now) == ([], [])
    d = e.counters.dropped
    assert (d["decline_unknown"], d["init_reboot_unknown"], d["renew_unknown"]) == (100, 100, 100)
    # somebody else's lease cannot be declined either
    ip, *_ = dora(e, mac(1), now)
    e.handle(client_packet(DECLINE, mac(2), 3, opt50=codec.ip_bytes(ip), opt54=SERVER), now)
    assert e.pool.by_ip[int.from_bytes(codec.ip_bytes(ip), "big")].state == "bound"
    # one client declining whatever it is offered holds at most two addresses
    for k in range(6):
        _, o = one(e.handle(client_packet(DISCOVER, mac(50), 10 + k), now + k))
        e.handle(client_packet(DECLINE, mac(50), 10 + k, opt50=o.yiaddr, opt54=SERVER), now + k)
    states = [le.state for le in e.pool.by_ip.values()]
    assert states.count("declined") == 2 and d["decline_over_limit"] == 4
    # and every other client still gets an address
    got = {dora(e, mac(60 + k), now + 10)[0] for k in range(7)}
    assert len(got) == 7


def test_a_known_client_still_reboots_and_renews_into_its_address():
    e = AuthoritativeEngine(settings())
    ip, *_ = dora(e, mac(1))
    e2 = AuthoritativeEngine(settings())  # a restart: the leases come from the store
    e2.load(e.take_dirty(1000.0)[0])
    _, ack = one(e2.handle(client_packet(REQUEST, mac(1), 8, opt50=codec.ip_bytes(ip)), 1100.0))
    assert ack.message_type == ACK and codec.ip_str(ack.yiaddr) == ip
    # a reserved client is known without a lease
    e2.set_hosts({mac(7): HostEntry(7, "res", "netboot", "10.77.0.42")})
    _, ack = one(e2.handle(client_packet(REQUEST, mac(7), 9, opt50=codec.ip_bytes("10.77.0.42")),
                           1100.0))
    assert ack.message_type == ACK


def test_inform_answers_options_without_a_lease():
    e = AuthoritativeEngine(settings())
    r, ack = one(e.handle(client_packet(INFORM, mac(1), 4, ciaddr="10.77.0.50"), 1000.0))
    assert ack.message_type == ACK and ack.yiaddr == b"\0\0\0\0"
    assert codec.OPT_LEASE_TIME not in ack.options and (r.ip, r.durable) == ("10.77.0.50", False)


def test_relay_replies_go_to_giaddr_and_echo_option_82():
    e = AuthoritativeEngine(settings())
    relay = b"\x01\x04eth1"
    r, o = one(e.handle(client_packet(DISCOVER, mac(1), 4, giaddr="10.77.0.2", opt82=relay), 1000.0))
    assert (r.ip, r.port) == ("10.77.0.2", 67) and o.options[codec.OPT_RELAY_AGENT] == relay
    assert o.giaddr == codec.ip_bytes("10.77.0.2")
    assert e.handle(client_packet(DISCOVER, mac(1), 4, giaddr="172.16.0.1"), 1000.0) == []
    assert e.counters.dropped["relay_outside_network"] == 1


def test_reservation_is_honoured_even_outside_the_pool():
    e = AuthoritativeEngine(settings())
    e.set_hosts({mac(5): HostEntry(3, "node5", ip_reservation="10.77.0.20")})
    ip, ack, _ = dora(e, mac(5))
    assert ip == "10.77.0.20" and ack.options[codec.OPT_HOSTNAME] == b"node5"
    # nobody else may take it: NAK when selecting it, silence on an INIT-REBOOT (unknown client)
    r = e.handle(client_packet(REQUEST, mac(6), 1, opt50=codec.ip_bytes("10.77.0.20"),
                               opt54=SERVER), 1001.0)
    assert codec.parse(r[0].payload).message_type == NAK
    assert e.handle(client_packet(REQUEST, mac(6), 1, opt50=codec.ip_bytes("10.77.0.20")),
                    1001.0) == []
    # nor is a reserved pool address handed out dynamically
    e.set_hosts({mac(7): HostEntry(4, "node7", ip_reservation="10.77.0.100")})
    got = {dora(e, mac(20 + i))[0] for i in range(9)}
    assert "10.77.0.100" not in got and len(got) == 9


def test_broadcast_flag_and_reply_destinations():
    def p(**kw):
        return codec.parse(client_packet(DISCOVER, mac(1), 1, **kw))
    yi = codec.ip_bytes("10.77.0.100")
    assert reply_destination(p(flags=0x8000), OFFER, yi) == ("255.255.255.255", 68, False)
    assert reply_destination(p(), OFFER, yi) == ("10.77.0.100", 68, True)
    assert reply_destination(p(ciaddr="10.77.0.5"), ACK, yi) == ("10.77.0.5", 68, False)
    assert reply_destination(p(ciaddr="10.77.0.5"), NAK, yi) == ("255.255.255.255", 68, False)
    assert reply_destination(p(giaddr="10.77.0.2"), NAK, yi) == ("10.77.0.2", 67, False)


def test_garbage_is_counted_and_dropped():
    e = AuthoritativeEngine(settings())
    assert e.handle(b"\x01\x02garbage", 1000.0) == []
    assert e.handle(client_packet(DISCOVER, mac(1), opt12=b"x" * 40)[:260], 1000.0) == []  # truncated
    no_type = codec.build(codec.Packet(chaddr=bytes(16), options={12: b"x"}))
    assert e.handle(no_type, 1000.0) == []
    d = e.counters.dropped
    assert d["malformed"] == 2 and d["no_message_type"] == 1
    assert dora(e, mac(1))[0] == "10.77.0.100"  # still serving


def test_pxe_clients_get_boot_answers_and_boot_events():
    e = AuthoritativeEngine(settings())
    r, o = one(e.handle(client_packet(DISCOVER, mac(1), 1, opt60=b"PXEClient:Arch:00007:UNDI:003016",
                                      opt93=b"\x00\x07"), 1000.0))
    assert o.file == b"snponly.efi" and o.siaddr == SERVER
    assert o.options[codec.OPT_TFTP_SERVER] == b"10.77.0.1" and o.options[codec.OPT_BOOTFILE] == b"snponly.efi"
    _, o = one(e.handle(client_packet(DISCOVER, mac(1), 2, opt77=b"iPXE", opt93=b"\x00\x00"), 1000.0))
    assert o.file == f"http://10.77.0.1:8081/boot/{mac(1)}.ipxe".encode()
    _, events = e.take_dirty(1000.0)
    assert [(ev.kind, ev.data["arch"], ev.data["boot_file"]) for ev in events] == [
        ("boot.dhcp", 7, "snponly.efi"), ("boot.dhcp", 0, o.file.decode())]
    # ignore: an unknown PXE client still gets an address, without boot options
    e2 = AuthoritativeEngine(settings(unknown_clients="ignore"))
    _, o = one(e2.handle(client_packet(DISCOVER, mac(2), 1, opt60=b"PXEClient:Arch:00000", opt93=b"\0\0"), 1000.0))
    assert o.yiaddr != b"\0\0\0\0" and o.file == b"" and codec.OPT_BOOTFILE not in o.options
    assert dict(e.counters.boot) == {"tftp": 1, "script": 1} and dict(e2.counters.boot) == {"none": 1}


def test_ipxe_is_told_not_to_wait_for_proxydhcp():
    """iPXE holds its REQUEST ~3 s for a ProxyDHCP OFFER unless the OFFER says
    "no-pxedhcp" (175.176 = 1): the authoritative server's OFFER and ACK to iPXE carry
    it; PXE firmware (not iPXE) and the proxy server's answers do not."""
    e = AuthoritativeEngine(settings())
    ipxe = dict(opt77=b"iPXE", opt93=b"\x00\x00")
    _, offer = one(e.handle(client_packet(DISCOVER, mac(1), 1, **ipxe), 1000.0))
    assert offer.message_type == OFFER
    assert offer.options[codec.OPT_IPXE_ENCAP] == bytes((176, 1, 1))
    ack = dora(e, mac(1), **ipxe)[1]
    assert ack.options[codec.OPT_IPXE_ENCAP] == bytes((176, 1, 1))
    _, fw = one(e.handle(client_packet(DISCOVER, mac(2), 1, opt60=b"PXEClient:Arch:00000:UNDI:002001",
                                       opt93=b"\x00\x00"), 1000.0))
    assert fw.file == b"undionly.kpxe" and codec.OPT_IPXE_ENCAP not in fw.options
    _, plain = one(e.handle(client_packet(DISCOVER, mac(3), 1), 1000.0))
    assert codec.OPT_IPXE_ENCAP not in plain.options
    p = ProxyEngine(settings(mode="proxy"))
    _, po = one(p.handle(client_packet(DISCOVER, mac(1), 1, opt60=b"PXEClient", **ipxe), 1000.0, port=67))
    assert po.file.endswith(b".ipxe") and codec.OPT_IPXE_ENCAP not in po.options


def test_proxy_answers_only_pxe_clients_without_an_address():
    e = ProxyEngine(settings(mode="proxy"))
    assert e.handle(client_packet(DISCOVER, mac(1), 1), 1000.0) == []
    assert e.counters.dropped["not_pxe"] == 1
    pxe = dict(opt60=b"PXEClient:Arch:00000:UNDI:002001", opt93=b"\x00\x00", opt97=b"\x00" + bytes(16))
    r, o = one(e.handle(client_packet(DISCOVER, mac(1), 1, flags=0x8000, **pxe), 1000.0, port=67))
    assert o.message_type == OFFER and o.yiaddr == b"\0\0\0\0" and o.file == b"undionly.kpxe"
    assert o.options[codec.OPT_VENDOR_CLASS] == b"PXEClient" and o.server_id == SERVER
    assert codec.OPT_LEASE_TIME not in o.options and r.ip == "255.255.255.255"
    # the REQUEST on 4011 from the addressed client gets an ACK back to its source
    r, o = one(e.handle(client_packet(REQUEST, mac(1), 2, ciaddr="10.77.0.150", **pxe), 1000.0,
                        port=4011, src=("10.77.0.150", 68)))
    assert o.message_type == ACK and o.file == b"undionly.kpxe" and (r.ip, r.port) == ("10.77.0.150", 68)
    # REQUESTs on 67 belong to the real DHCP server
    assert e.handle(client_packet(REQUEST, mac(1), 3, **pxe), 1000.0, port=67) == []


# ------------------------------------------------------------------ the SQLite store

@pytest.fixture
def store(tmp_path):
    path = tmp_path / "nixie.db"
    Store(path)
    s = SqliteLeaseStore(path)
    yield s, path
    s.close()


def test_leases_survive_a_restart_through_sqlite(store):
    s, _ = store
    e = AuthoritativeEngine(settings())
    ips = [dora(e, mac(i), opt12=f"h{i}".encode())[0] for i in range(5)]
    s.commit(*e.take_dirty(1000.0))
    e2 = AuthoritativeEngine(settings())
    e2.load(s.load_leases())
    # every client renews into its own address, a new one gets a fresh address
    for i, ip in enumerate(ips):
        _, ack = one(e2.handle(client_packet(REQUEST, mac(i), 1, ciaddr=ip), 1100.0))
        assert ack.message_type == ACK
        _, o = one(e2.handle(client_packet(DISCOVER, mac(i), 2), 1100.0))
        assert codec.ip_str(o.yiaddr) == ip
    _, o = one(e2.handle(client_packet(DISCOVER, mac(50), 2), 1100.0))
    assert codec.ip_str(o.yiaddr) not in ips
    _, nak = one(e2.handle(client_packet(REQUEST, mac(50), 3, opt50=codec.ip_bytes(ips[0])), 1100.0))
    assert nak.message_type == NAK
    rows = s.conn.execute("SELECT count(*) FROM events WHERE kind = 'dhcp.lease'").fetchone()[0]
    assert rows == 5


def test_reservations_come_from_the_hosts_table(store):
    s, path = store
    conn = Store(path).conn()
    hosts.add_host(conn, "node1", ["52:54:00:00:01:01"], "github:me/infra", ip="10.77.0.9",
                   network="10.77.0.1/24")
    from appliance.errors import Conflict, InvalidInput
    with pytest.raises(Conflict):
        hosts.add_host(conn, "node2", ["52:54:00:00:01:02"], "github:me/infra", ip="10.77.0.9")
    with pytest.raises(InvalidInput):
        hosts.update_host(conn, "node1", ip="192.168.0.4", network="10.77.0.1/24")
    table = s.hosts_by_mac()
    assert table["52:54:00:00:01:01"] == HostEntry(table["52:54:00:00:01:01"].id, "node1", "netboot", "10.77.0.9")
    e = AuthoritativeEngine(settings())
    e.set_hosts(table)
    assert dora(e, mac(1))[0] == "10.77.0.9"
    hosts.update_host(conn, "node1", ip="")
    assert s.hosts_by_mac()["52:54:00:00:01:01"].ip_reservation is None


def test_authoritative_offers_do_not_claim_to_be_proxy_offers():
    """EDK2 treats an address offer carrying vendor class PXEClient as BINL and asks
    port 4011; ours echoes only HTTPClient (UEFI HTTP Boot needs it)."""
    e = AuthoritativeEngine(settings())
    _, o = one(e.handle(client_packet(DISCOVER, mac(1), 1, opt60=b"PXEClient:Arch:00007:UNDI:003000",
                                      opt93=b"\x00\x07"), 1000.0))
    assert codec.OPT_VENDOR_CLASS not in o.options and o.file == b"snponly.efi"
    _, o = one(e.handle(client_packet(DISCOVER, mac(2), 1, opt60=b"HTTPClient:Arch:00016:UNDI:003000",
                                      opt93=b"\x00\x10"), 1000.0))
    assert o.options[codec.OPT_VENDOR_CLASS] == b"HTTPClient"
    assert o.file == b"http://10.77.0.1:8081/ipxe/snponly.efi"


def test_fast_path_answers_exactly_like_the_general_path(monkeypatch):
    """The hot path (plain DISCOVER / SELECTING REQUEST) and the full parser agree."""
    def run(fast: bool):
        e = AuthoritativeEngine(settings(range_last="10.77.0.120"))
        e.set_hosts({mac(3): HostEntry(9, "node3")})
        if not fast:
            monkeypatch.setattr(e, "_fast_path", lambda data, now: None)
        out = []
        for i in range(6):
            opts = {"opt12": b"h%d" % i} if i % 2 else {"opt61": b"\x01" + bytes(5) + bytes([i])}
            flags = 0x8000 if i % 3 == 0 else 0
            for r in e.handle(client_packet(DISCOVER, mac(i), i, flags=flags, **opts), 1000.0):
                out.append((r.payload, r.ip, r.port, r.arp_mac, r.durable))
                yi = codec.parse(r.payload).yiaddr
                req = client_packet(REQUEST, mac(i), i, flags=flags, opt50=yi, opt54=SERVER, **opts)
                for r2 in e.handle(req, 1000.0):
                    out.append((r2.payload, r2.ip, r2.port, r2.arp_mac, r2.durable))
        # a REQUEST for an address it may not have: NAK, from the general path either way
        for r in e.handle(client_packet(REQUEST, mac(9), 1, opt50=codec.ip_bytes("10.77.0.100"),
                                        opt54=SERVER), 1000.0):
            out.append((r.payload, r.ip, r.port, r.arp_mac, r.durable))
        rows, events = e.take_dirty(1000.0)
        return out, rows, events, e.counters.to_dict()
    assert run(True) == run(False)



@hsettings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.lists(st.tuples(st.integers(0, 330), st.integers(0, 255)), max_size=6),
       st.integers(200, 340))
def test_engine_never_raises_on_mutated_requests(kind, flips, cut):
    base = [client_packet(DISCOVER, mac(1), 1, opt12=b"abc", opt61=b"\x01xyzabc"),
            client_packet(REQUEST, mac(1), 1, opt50=codec.ip_bytes("10.77.0.100"), opt54=SERVER),
            client_packet(REQUEST, mac(1), 1, ciaddr="10.77.0.100"),
            client_packet(DISCOVER, mac(2), 1, opt60=b"PXEClient:Arch:00007", opt93=b"\0\7",
                          opt82=b"\x01\x02ab")][kind]
    raw = bytearray(base)
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    e = AuthoritativeEngine(settings())
    for r in e.handle(bytes(raw[:cut]), 1000.0):
        assert codec.parse(r.payload).op == codec.BOOTREPLY


def test_conflict_check_skips_and_quarantines_an_address_in_use():
    e = AuthoritativeEngine(settings(), decline_quarantine=100)
    probed = []
    e.probe = lambda ip: probed.append(ip) or ip == "10.77.0.100"
    _, o = one(e.handle(client_packet(DISCOVER, mac(1), 1), 1000.0))
    assert codec.ip_str(o.yiaddr) == "10.77.0.101" and probed == ["10.77.0.100", "10.77.0.101"]
    rows, events = e.take_dirty(1000.0)
    assert [(r.ip, r.state) for r in rows] == [("10.77.0.100", "declined")]
    assert events[0].kind == "dhcp.conflict" and events[0].level == "warning"
    # a retransmitted DISCOVER is not probed again
    one(e.handle(client_packet(DISCOVER, mac(1), 1), 1001.0))
    assert len(probed) == 2


def test_proxy_answers_the_captured_edk2_binl_request_on_4011():
    """OVMF next to dnsmasq (captured in the lab): EDK2 took our proxy offer as
    BINL and asked again on port 4011 from its new address."""
    from tests.dhcp_helpers import DATA, pcap_udp_payloads

    frames = pcap_udp_payloads(DATA / "ovmf-proxy.pcap")
    binl = [p for s, d, p in frames if (s, d) == (4011, 4011) and codec.parse(p).op == codec.BOOTREQUEST]
    assert binl, "the capture holds EDK2's request to port 4011"
    req = codec.parse(binl[0])
    assert req.message_type == REQUEST and req.client_arch == 7 and req.ciaddr != b"\0\0\0\0"
    e = ProxyEngine(settings(mode="proxy"))
    r, ack = one(e.handle(binl[0], 1000.0, port=4011, src=(codec.ip_str(req.ciaddr), 4011)))
    assert ack.message_type == ACK and ack.file == b"snponly.efi" and ack.yiaddr == b"\0\0\0\0"
    assert ack.options[codec.OPT_VENDOR_CLASS] == b"PXEClient" and ack.siaddr == SERVER
    assert (r.ip, r.port) == (codec.ip_str(req.ciaddr), 4011)
    # and the reply we sent in the lab said the same
    ours = [codec.parse(p) for s, d, p in frames if (s, d) == (4011, 4011) and codec.parse(p).op == 2]
    assert ours and ours[0].file == b"snponly.efi"


def test_an_address_taken_over_by_another_client_drops_the_old_hostname(store):
    s, _ = store
    e = AuthoritativeEngine(settings(range_last="10.77.0.100"))
    ip, *_ = dora(e, mac(1), opt12=b"old-name")
    e.handle(client_packet(RELEASE, mac(1), 3, ciaddr=ip, opt54=SERVER), 1001.0)
    s.commit(*e.take_dirty(1001.0))
    assert dora(e, mac(2), 1002.0)[0] == ip
    s.commit(*e.take_dirty(1002.0))
    (row,) = s.conn.execute("SELECT mac, hostname, state FROM leases").fetchall()
    assert tuple(row) == (mac(2), None, "bound")


def test_one_commit_with_many_rows_keeps_the_last_state_of_each_address(store):
    from netservices.dhcp.store import LeaseRecord

    s, _ = store
    rows = [LeaseRecord(f"10.77.0.{100 + i % 70}", mac(i % 70), None, None, "bound", 1.0, 2.0 + i, 3.0)
            for i in range(150)]  # three chunks, each address twice or three times
    s.commit(rows, [])
    got = {r[0]: r[1] for r in s.conn.execute("SELECT ip, expires FROM leases")}
    assert len(got) == 70 and got["10.77.0.100"] == 2.0 + 140 and got["10.77.0.169"] == 2.0 + 139


def test_expired_leases_are_reused_oldest_first():
    e = AuthoritativeEngine(settings(range_last="10.77.0.102", lease_seconds=600))
    a, *_ = dora(e, mac(1), 1000.0)  # expires 1600
    b, *_ = dora(e, mac(2), 900.0)  # expires 1500: the oldest
    c, *_ = dora(e, mac(3), 1100.0)  # expires 1700
    assert e.handle(client_packet(DISCOVER, mac(4), 9), 1400.0) == []  # nothing has ended yet
    got = [dora(e, mac(4 + i), 1800.0)[0] for i in range(3)]
    assert got == [b, a, c]


def test_reconfigure_moves_the_range_and_lease_time_and_keeps_every_lease():
    """A settings change applied live (appliance.runtime.wiring): same engine, new range."""
    e = AuthoritativeEngine(settings(range_first="10.77.0.100", range_last="10.77.0.109"))
    _, offer = one(e.handle(client_packet(DISCOVER, mac(1), 7, opt50=codec.ip_bytes("10.77.0.105")),
                            1000.0))
    _, ack = one(e.handle(client_packet(REQUEST, mac(1), 7, opt50=offer.yiaddr, opt54=SERVER), 1000.0))
    kept = codec.ip_str(ack.yiaddr)
    moved, *_ = dora(e, mac(2))
    assert (kept, moved) == ("10.77.0.105", "10.77.0.100")
    e.reconfigure(settings(range_first="10.77.0.105", range_last="10.77.0.120", lease_seconds=900))
    # a new client gets the new range (10.77.0.105 is still bound: the next one)
    ip, ack, _ = dora(e, mac(3), now=1010.0)
    assert ip == "10.77.0.106"
    assert int.from_bytes(ack.options[codec.OPT_LEASE_TIME], "big") == 900
    # a client whose address is still inside the range renews it, with the new lease time
    _, ack = one(e.handle(client_packet(REQUEST, mac(1), 9, ciaddr=kept), 1020.0))
    assert ack.message_type == ACK and codec.ip_str(ack.yiaddr) == kept
    rows, _ = e.take_dirty(1020.0)
    assert [(r.ip, r.expires) for r in rows if r.mac == mac(1)] == [(kept, 1920.0)]
    # one outside it is told no, and gets an address of the new range when it asks again
    _, nak = one(e.handle(client_packet(REQUEST, mac(2), 9, ciaddr=moved), 1020.0))
    assert nak.message_type == NAK
    ip, *_ = dora(e, mac(2), now=1021.0)
    assert ip == "10.77.0.107"


def test_reconfigure_refuses_what_needs_new_sockets():
    e = AuthoritativeEngine(settings())
    for change in ({"interface": "eth9"}, {"server_ip": "10.77.0.2"}, {"prefix": 16},
                   {"mode": "proxy"}, {"conflict_check": True}):
        with pytest.raises(ValueError):
            e.reconfigure(settings(**change))
