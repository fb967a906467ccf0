"""LAN DNS: codec, zone, resolver policy, cache, and the server on loopback."""

import ipaddress
import socket
import struct
import threading
import time

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from netservices.backend import NameRecord
from netservices.dns import make_dns_service, wire
from netservices.dns.cache import ForwardCache
from netservices.dns.resolver import FORWARD, Resolver
from netservices.dns.server import MAX_TCP_CLIENTS, MAX_TCP_PER_CLIENT
from netservices.dns.zone import build_zone, clean_hostname, lan_records

RECORDS = [("node1", "10.77.0.5"), ("Lap Top!", "10.77.0.150"), ("node1", "10.77.0.6"),
           ("bad", "not-an-ip"), ("", "10.77.0.9")]


def q(name, qtype="A", edns=None, rd=True):
    r = DNSRecord.question(name, qtype)
    r.header.rd = int(rd)
    if edns:
        r.add_ar(EDNS0(udp_len=edns))
    return r


def resolver(records=RECORDS, upstreams=()):
    r = Resolver.create("lab.nixie", "10.77.0.0/24", clients=["10.99.0.0/24"], upstreams=upstreams)
    r.zone = build_zone("lab.nixie", records, network="10.77.0.0/24")
    return r


def ask(r, record, client="10.77.0.50", tcp=False):
    out = r.handle(record.pack(), client, 1000.0, tcp=tcp)
    return out if out is None or isinstance(out, tuple) else DNSRecord.parse(out)


def test_clean_hostname():
    assert clean_hostname("Lap Top!") == "lap-top"
    assert clean_hostname("web01.example.com") == "web01"
    assert clean_hostname("---") is None
    assert clean_hostname("x" * 80) == "x" * 63


def test_a_record_for_host_with_two_addresses_and_case_echoed():
    ans = ask(resolver(), q("NODE1.Lab.Nixie"))
    assert ans.header.rcode == RCODE.NOERROR and ans.header.aa and ans.header.ra
    assert sorted(str(x.rdata) for x in ans.rr) == ["10.77.0.5", "10.77.0.6"]
    assert str(ans.q.qname) == "NODE1.Lab.Nixie."
    assert all(x.ttl == 60 for x in ans.rr)


def test_ptr_and_sanitised_lease_name():
    ans = ask(resolver(), q("150.0.77.10.in-addr.arpa", "PTR"))
    assert [str(x.rdata) for x in ans.rr] == ["lap-top.lab.nixie."]
    ans = ask(resolver(), q("lap-top.lab.nixie"))
    assert [str(x.rdata) for x in ans.rr] == ["10.77.0.150"]


def test_negative_answers_carry_the_soa():
    r = resolver()
    nx = ask(r, q("ghost.lab.nixie"))
    assert nx.header.rcode == RCODE.NXDOMAIN and nx.header.aa
    assert nx.auth[0].rtype == QTYPE.SOA
    nodata = ask(r, q("node1.lab.nixie", "AAAA"))
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr and nodata.auth
    rev = ask(r, q("77.0.77.10.in-addr.arpa", "PTR"))
    assert rev.header.rcode == RCODE.NXDOMAIN
    soa = ask(r, q("lab.nixie", "SOA"))
    assert soa.rr[0].rtype == QTYPE.SOA


def test_label_boundary_and_outside_names_are_not_ours():
    r = resolver(upstreams=["10.0.0.53"])
    out = r.handle(q("xlab.nixie").pack(), "10.77.0.50", 0)
    assert isinstance(out, tuple) and out[0] is FORWARD
    out = r.handle(q("1.0.0.192.in-addr.arpa", "PTR").pack(), "10.77.0.50", 0)
    assert isinstance(out, tuple)


def test_no_upstream_means_refused_and_outsiders_are_refused():
    r = resolver()
    assert ask(r, q("example.com")).header.rcode == RCODE.REFUSED
    r = resolver(upstreams=["10.0.0.53"])
    for client in ("192.168.1.7", "10.78.0.1"):
        ans = ask(r, q("node1.lab.nixie"), client=client)
        assert ans.header.rcode == RCODE.REFUSED and not ans.rr
    assert isinstance(r.handle(q("example.com").pack(), "10.99.0.2", 0), tuple)  # VPN may recurse
    assert r.counters.refused == 2


def test_large_local_answer_truncates_over_udp_not_tcp():
    many = [("big", f"10.77.0.{i}") for i in range(10, 60)]
    r = resolver(many)
    udp = ask(r, q("big.lab.nixie"))
    assert udp.header.tc and not udp.rr
    tcp = ask(r, q("big.lab.nixie"), tcp=True)
    assert not tcp.header.tc and len(tcp.rr) == 50
    edns = ask(r, q("big.lab.nixie", edns=4096))
    assert not edns.header.tc and len(edns.rr) == 50
    assert r.counters.truncated == 1


def test_malformed_counted_and_dropped_notimp_answered():
    r = resolver()
    assert r.handle(b"\x00\x01", "10.77.0.50", 0) is None
    resp = DNSRecord.question("x.lab.nixie").reply().pack()
    assert r.handle(resp, "10.77.0.50", 0) is None  # a response is not a query
    assert r.counters.malformed == 2
    notify = q("lab.nixie")
    notify.header.opcode = 4
    assert ask(r, notify).header.rcode == RCODE.NOTIMP


def check_response(query, out):
    """A reply we send is a response to that query: same ID, QR set, its question echoed,
    and every record it claims is there (our own parser reads it back)."""
    assert out[:2] == query[:2] and out[2] & 0x80
    parsed = wire.parse_query(query)
    assert out[12:12 + len(parsed.question)] == parsed.question
    _, _, qd, an, ns, ar = struct.unpack_from("!HHHHHH", out)
    i = 12 + len(parsed.question)
    for _ in range(an + ns + ar):
        i = wire.skip_name(out, i)
        i += 10 + struct.unpack_from("!H", out, i + 8)[0]
    assert qd == 1 and i == len(out)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_raise(data):
    r = resolver(upstreams=["10.0.0.53"])
    out = r.handle(data, "10.77.0.50", 0)
    assert out is None or isinstance(out, bytes | tuple)
    if isinstance(out, bytes):
        check_response(data, out)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 300))
def test_fuzz_mutated_queries(junk, pos):
    base = bytearray(q("node1.lab.nixie", edns=1232).pack())
    pos = pos % len(base)
    mutated = bytes(base[:pos]) + junk + bytes(base[pos + len(junk):])
    r = resolver(upstreams=["10.0.0.53"])
    out = r.handle(mutated, "10.77.0.50", 0)
    if isinstance(out, bytes):
        check_response(mutated, out)
    assert r.counters.queries == 1


def upstream_reply(name, ip, ttl):
    rec = q(name).reply()
    rec.add_answer(RR(name, QTYPE.A, rdata=A(ip), ttl=ttl))
    return rec.pack()


def test_cache_counts_ttl_down_and_expires():
    c = ForwardCache()
    query = wire.parse_query(q("Example.COM").pack())
    assert c.put((query.key, 1, 1), upstream_reply("example.com", "192.0.2.1", 30), 100.0)
    hit = DNSRecord.parse(c.get(query, 110.2, 512))
    assert hit.header.id == query.id and str(hit.q.qname) == "Example.COM."
    assert hit.rr[0].ttl == 20 and str(hit.rr[0].rdata) == "192.0.2.1"
    assert c.get(query, 130.0, 512) is None and len(c) == 0


def test_cache_skips_servfail_and_keeps_negative_for_soa_minimum():
    c = ForwardCache()
    fail = q("a.example").reply()
    fail.header.rcode = RCODE.SERVFAIL
    assert not c.put((b"k", 1, 1), fail.pack(), 0)
    neg = DNSRecord.parse(q("nope.example").reply().pack())
    neg.header.rcode = RCODE.NXDOMAIN
    neg.add_auth(*RR.fromZone("example. 300 IN SOA ns.example. h.example. 1 2 3 4 15"))
    query = wire.parse_query(q("nope.example").pack())
    assert c.put((query.key, 1, 1), neg.pack(), 0)
    assert DNSRecord.parse(c.get(query, 10, 512)).header.rcode == RCODE.NXDOMAIN
    assert c.get(query, 16, 512) is None


class Directory:
    def __init__(self):
        self.records = [("node1", "10.77.0.5")]

    def name_records(self):
        return list(self.records)


@pytest.fixture
def loopback_upstream():
    """A tiny upstream on loopback that answers every A query with 192.0.2.7 and counts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    seen = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except OSError:
                continue
            req = DNSRecord.parse(data)
            seen.append(str(req.q.qname))
            rep = req.reply()
            rep.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=300))
            sock.sendto(rep.pack(), addr)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield sock.getsockname(), seen
    finally:
        stop.set()
        t.join()
        sock.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_server_on_loopback_udp_tcp_forward_cache_refresh(loopback_upstream, workers):
    (uhost, uport), seen = loopback_upstream
    directory = Directory()
    svc = make_dns_service(listen=["127.0.0.1:0"], domain="lab.nixie", network="10.77.0.0/24",
                           directory=directory, upstreams=[f"{uhost}:{uport}"],
                           refresh_seconds=0.1, workers=workers)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    t.start()
    try:
        for _ in range(100):
            if svc.bound:
                break
            time.sleep(0.02)
        host, port = svc.bound[0]
        ans = DNSRecord.parse(q("node1.lab.nixie").send(host, port, timeout=2))
        assert [str(x.rdata) for x in ans.rr] == ["10.77.0.5"]
        tcp = DNSRecord.parse(q("node1.lab.nixie").send(host, port, tcp=True, timeout=2))
        assert [str(x.rdata) for x in tcp.rr] == ["10.77.0.5"]
        for _ in range(2):
            fwd = DNSRecord.parse(q("www.example.org").send(host, port, timeout=3))
            assert [str(x.rdata) for x in fwd.rr] == ["192.0.2.7"]
        assert seen == ["www.example.org."]  # the second came from the cache
        directory.records.append(("new", "10.77.0.8"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ans = DNSRecord.parse(q("new.lab.nixie").send(host, port, timeout=2))
            if ans.rr:
                break
            time.sleep(0.05)
        assert [str(x.rdata) for x in ans.rr] == ["10.77.0.8"]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"\xff" * 5, (host, port))
        s.close()
        ans = DNSRecord.parse(q("node1.lab.nixie").send(host, port, timeout=2))  # still serving
        assert ans.rr
        # with two loops the junk may sit with the other one a moment longer than our query
        deadline = time.monotonic() + 5
        while svc.stats()["malformed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        st_ = svc.stats()
        assert st_["malformed"] == 1 and st_["cache_hits"] == 1 and st_["forwarded"] == 1
        assert st_["upstream_answers"] == 1 and 0 <= st_["upstream_ms"] < 3000  # /metrics
        assert st_["workers"] == workers
    finally:
        stop.set()
        svc.shutdown()
        t.join(timeout=3)
    assert not t.is_alive()


def test_parse_query_reads_edns_size():
    parsed = wire.parse_query(q("a.b", edns=1400).pack())
    assert parsed.edns_size == 1400 and parsed.udp_limit() == 1400
    assert wire.parse_query(q("a.b").pack()).udp_limit() == 512
    with pytest.raises(wire.Malformed):
        wire.parse_query(struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01")


def test_response_memo_follows_zone_swaps_ttls_and_clients():
    r = resolver(upstreams=["10.0.0.53"])
    data = bytes(q("node1.lab.nixie").pack())
    first = DNSRecord.parse(r.handle(data, "10.77.0.50", 0))
    again = DNSRecord.parse(r.handle(data, "10.77.0.50", 0))
    assert first.rr == again.rr and r.counters.local == 2
    outsider = DNSRecord.parse(r.handle(data, "192.168.9.9", 0))  # memo is not a way around it
    assert outsider.header.rcode == RCODE.REFUSED and not outsider.rr
    r.zone = build_zone("lab.nixie", [("node1", "10.77.0.9")], network="10.77.0.0/24")
    assert [str(x.rdata) for x in DNSRecord.parse(r.handle(data, "10.77.0.50", 0)).rr] == ["10.77.0.9"]

    fq = bytes(q("www.example.org").pack())
    pq = wire.parse_query(fq)
    r.cache.put((pq.key, pq.qtype, pq.qclass), upstream_reply("www.example.org", "192.0.2.1", 30), 100.0)
    ttls = [DNSRecord.parse(r.handle(fq, "10.77.0.50", t)).rr[0].ttl for t in (100.2, 100.7, 101.1, 105.0)]
    assert ttls == [30, 30, 29, 25]
    assert r.handle(fq, "10.77.0.50", 131.0)[0] is FORWARD  # expired: asks upstream again


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_fuzz_upstream_replies_never_raise(data):
    """Whatever an upstream sends, the cache keeps it only if it can serve it back."""
    c = ForwardCache()
    query = wire.parse_query(q("x.example").pack())
    kept = c.put((query.key, 1, 1), data, 0.0)
    out = c.get(query, 0.5, 512)
    assert kept or out is None
    if out is not None:
        assert out[:2] == struct.pack("!H", query.id) and out[2] & 0x80


def test_lan_records_registered_and_router_names_win_over_dhcp():
    """Finding 4 as a plain function: registered hosts, then the router's names, then the
    first DHCP claim of a free name that is not reserved."""
    records = [NameRecord("db1", "10.77.0.5"), NameRecord("spare", None),
               NameRecord("db1", "10.77.0.99", "lease"), NameRecord("spare", "10.77.0.98", "lease"),
               NameRecord("WPAD", "10.77.0.97", "lease"), NameRecord("isatap", "10.77.0.96", "lease"),
               NameRecord("localhost", "10.77.0.95", "lease"),
               NameRecord("gw", "10.77.0.94", "lease"), NameRecord("laptop", "10.77.0.93", "lease"),
               NameRecord("Laptop", "10.77.0.92", "lease")]
    got = lan_records(records, router_ip="10.77.0.1", router_names=["gw", "db1"])
    assert got == [("db1", "10.77.0.5"), ("gw", "10.77.0.1"), ("laptop", "10.77.0.93")]
    r = resolver(got)
    assert [str(x.rdata) for x in ask(r, q("db1.lab.nixie")).rr] == ["10.77.0.5"]
    assert ask(r, q("wpad.lab.nixie")).header.rcode == RCODE.NXDOMAIN


def test_cache_keeps_no_truncated_reply():
    rep = q("big.example").reply()
    rep.header.tc = 1
    assert not ForwardCache().put((b"k", 1, 1), rep.pack(), 0)


def start_service(**kw):
    svc = make_dns_service(listen=["127.0.0.1:0"], domain="lab.nixie", network="10.77.0.0/24",
                           directory=Directory(), **kw)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not svc.bound and time.monotonic() < deadline:
        time.sleep(0.02)
    return svc, stop, t


def test_forged_upstream_replies_do_not_drop_the_real_answer():
    """Finding 6 on loopback: an upstream that sees the query (so knows ID and port)
    first sends forgeries (right ID, wrong question; wrong ID; from another port), then
    the real answer. The client gets the real answer; every query left from its own
    source port."""
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.bind(("127.0.0.1", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    up.settimeout(0.2)
    ports, stop_up = [], threading.Event()

    def serve():
        while not stop_up.is_set():
            try:
                data, addr = up.recvfrom(4096)
            except OSError:
                continue
            ports.append(addr[1])
            req = DNSRecord.parse(data)
            wrong_q = DNSRecord.question("evil.example")
            wrong_q.header.id = req.header.id
            forged = wrong_q.reply()
            forged.add_answer(RR("evil.example", QTYPE.A, rdata=A("6.6.6.6"), ttl=300))
            up.sendto(forged.pack(), addr)
            fake = req.reply()
            fake.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("6.6.6.7"), ttl=300))
            other.sendto(fake.pack(), addr)  # right ID and question, wrong source port
            fake.header.id ^= 1
            up.sendto(fake.pack(), addr)  # right source and question, wrong ID
            real = req.reply()
            real.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.80"), ttl=300))
            up.sendto(real.pack(), addr)

    ut = threading.Thread(target=serve, daemon=True)
    ut.start()
    svc, stop, t = start_service(upstreams=[f"127.0.0.1:{up.getsockname()[1]}"])
    try:
        host, port = svc.bound[0]
        for i in range(6):
            ans = DNSRecord.parse(q(f"www{i}.example.org").send(host, port, timeout=3))
            assert [str(x.rdata) for x in ans.rr] == ["192.0.2.80"]
        assert len(set(ports)) == 6, ports
        assert svc.stats()["upstream_mismatched"] == 6 * 2  # the one from `other` never arrives
    finally:
        stop.set()
        svc.shutdown()
        t.join(3)
        stop_up.set()
        ut.join(2)
        up.close()
        other.close()


def tcp_ask(host, port, name, source):
    with socket.create_connection((host, port), timeout=3, source_address=(source, 0)) as c:
        data = q(name).pack()
        c.sendall(struct.pack("!H", len(data)) + data)
        n = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
        return DNSRecord.parse(c.recv(n, socket.MSG_WAITALL))


def test_idle_tcp_connections_cannot_take_every_slot():
    """Finding 11 (DNS part) on loopback: one address holds at most MAX_TCP_PER_CLIENT
    connections; with every slot taken by idle ones (ten addresses), a new client still
    gets its answer: the connection idle longest makes room."""
    svc, stop, t = start_service()
    held = []
    try:
        host, port = svc.bound[0]
        for i in range(1, 11):
            for _ in range(MAX_TCP_PER_CLIENT + 2):
                held.append(socket.create_connection((host, port), timeout=2,
                                                     source_address=(f"127.0.1.{i}", 0)))
        deadline = time.monotonic() + 5
        while svc.stats()["tcp_refused_per_client"] < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        st_ = svc.stats()
        assert st_["tcp_refused_per_client"] == 20
        assert st_["tcp_clients"] == MAX_TCP_CLIENTS and st_["tcp_evicted_idle"] == 80 - 64
        ans = tcp_ask(host, port, "node1.lab.nixie", "127.0.0.2")
        assert [str(x.rdata) for x in ans.rr] == ["10.77.0.5"]
        assert svc.stats()["tcp_evicted_idle"] == 80 - 64 + 1
    finally:
        for s in held:
            s.close()
        stop.set()
        svc.shutdown()
        t.join(3)


def test_aaaa_and_ip6_arpa_ptr_for_the_lan_prefix():
    """AAAA beside A for one name, its ip6.arpa PTR; names in the prefix we do not know
    are NXDOMAIN, other ip6.arpa names are not ours; clients in the prefix may query,
    IPv6 clients outside it are refused."""
    r = Resolver.create("lab.nixie", "10.77.0.0/24", network6="fd00:77::/64", upstreams=["10.0.0.53"])
    r.zone = build_zone("lab.nixie", [("node1", "10.77.0.5"), ("node1", "fd00:77::1:5"),
                                      ("v6only", "FD00:77::0:1:6")],
                        network="10.77.0.0/24", network6="fd00:77::/64")
    client = "fd00:77::abcd"
    aaaa = ask(r, q("node1.lab.nixie", "AAAA"), client)
    assert aaaa.header.rcode == RCODE.NOERROR and aaaa.header.aa
    assert [str(x.rdata) for x in aaaa.rr] == ["fd00:77::1:5"] and aaaa.rr[0].rtype == QTYPE.AAAA
    assert [str(x.rdata) for x in ask(r, q("node1.lab.nixie"), client).rr] == ["10.77.0.5"]
    nodata = ask(r, q("v6only.lab.nixie", "A"), client)
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr and nodata.auth
    ptr = ask(r, q(ipaddress.IPv6Address("fd00:77::1:6").reverse_pointer, "PTR"), client)
    assert [str(x.rdata) for x in ptr.rr] == ["v6only.lab.nixie."]
    unknown = ask(r, q(ipaddress.IPv6Address("fd00:77::99").reverse_pointer, "PTR"), client)
    assert unknown.header.rcode == RCODE.NXDOMAIN and unknown.auth
    out = r.handle(q(ipaddress.IPv6Address("2001:db8::1").reverse_pointer, "PTR").pack(), client, 0)
    assert isinstance(out, tuple) and out[0] is FORWARD
    refused = ask(r, q("node1.lab.nixie", "AAAA"), "2001:db8::5")
    assert refused.header.rcode == RCODE.REFUSED and not refused.rr
