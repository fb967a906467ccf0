"""TFTP codec, policy and the server loop on loopback (a Python client, real sockets)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netservices.backend import HostRecord
from netservices.tftp import codec, policy, populate_root
from netservices.tftp.codec import MalformedPacket
from netservices.tftp.policy import Refused
from netservices.tftp.server import MAX_PER_CLIENT, UNHEARD_SENDS, TftpServer


def rrq(name: str, mode: str = "octet", **opts) -> bytes:
    out = struct.pack("!H", 1) + name.encode() + b"\0" + mode.encode() + b"\0"
    for k, v in opts.items():
        out += k.encode() + b"\0" + str(v).encode() + b"\0"
    return out


# ------------------------------------------------------------------ codec
def test_parse_request_with_options():
    req = codec.parse_request(rrq("ipxe.efi", blksize=1468, tsize=0))
    assert req == codec.Request(False, "ipxe.efi", "octet", {"blksize": "1468", "tsize": "0"})
    wrq = codec.parse_request(struct.pack("!H", 2) + b"up\0octet\0")
    assert wrq.write and wrq.filename == "up"


@pytest.mark.parametrize("data", [b"", b"\x00\x01", b"\x00\x01abc", b"\x00\x03\x00\x01data",
                                  b"\x00\x01name\0octet", b"\x00\x01\0octet\0",
                                  b"\x00\x01a\0octet\0blksize\0"])
def test_parse_request_rejects(data):
    with pytest.raises(MalformedPacket):
        codec.parse_request(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_parsers_only_raise_malformed(data):
    for parse in (codec.parse_request, codec.parse_ack, codec.decode_oack, codec.decode_error):
        try:
            parse(data)
        except MalformedPacket:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60),
       st.dictionaries(st.sampled_from(["blksize", "tsize", "timeout", "windowsize"]),
                       st.integers(0, 70000)))
def test_request_roundtrip(name, opts):
    req = codec.parse_request(rrq(name, **opts))
    assert req.filename == name and req.options == {k: str(v) for k, v in opts.items()}


def test_oack_and_error_encoding():
    assert codec.decode_oack(codec.encode_oack({"blksize": "1468", "tsize": "9"})) == {
        "blksize": "1468", "tsize": "9"}
    assert codec.decode_error(codec.encode_error(2, "nope")) == (2, "nope")
    assert codec.encode_data(65537, b"x") == b"\x00\x03\x00\x01x"


# ------------------------------------------------------------------ policy
@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "a.bin").write_bytes(b"A" * 1000)
    (r / "sub" / "b.bin").write_bytes(b"B")
    (tmp_path / "secret").write_text("secret")
    os.symlink(tmp_path / "secret", r / "out")
    os.symlink("sub/b.bin", r / "in")
    return r


def test_resolve_path_inside(root):
    assert policy.resolve_path(str(root), "a.bin") == str(root / "a.bin")
    assert policy.resolve_path(str(root), "sub/b.bin") == str(root / "sub" / "b.bin")
    assert policy.resolve_path(str(root), "./sub//b.bin") == str(root / "sub" / "b.bin")
    assert policy.resolve_path(str(root), "in") == str(root / "sub" / "b.bin")


@pytest.mark.parametrize("name,code", [
    ("../secret", 2), ("sub/../../secret", 2), ("/etc/passwd", 2), ("out", 2),
    ("sub\\..\\..\\secret", 2), ("nope", 1), ("sub", 1), ("a\x01", 2)])
def test_resolve_path_refuses(root, name, code):
    with pytest.raises(Refused) as e:
        policy.resolve_path(str(root), name)
    assert e.value.code == code


def test_negotiate():
    n = policy.negotiate({"blksize": "1468", "tsize": "0", "timeout": "3", "windowsize": "4",
                          "bogus": "1"}, 12345)
    assert (n.blksize, n.timeout, n.windowsize) == (1468, 3.0, 4)
    assert n.oack == {"blksize": "1468", "tsize": "12345", "timeout": "3", "windowsize": "4"}
    assert policy.negotiate({}, 5).oack is None
    assert policy.negotiate({"blksize": "99999", "windowsize": "1000"}, 5).oack == {
        "blksize": str(policy.MAX_BLKSIZE), "windowsize": str(policy.MAX_WINDOWSIZE)}
    assert policy.negotiate({"blksize": "4", "timeout": "0"}, 5).oack is None
    assert policy.negotiate({"timeout": "255"}, 5) == policy.Negotiated()  # capped: ignored


def test_populate_root_copies(tmp_path):
    src = tmp_path / "ipxe"
    src.mkdir()
    for n in ("undionly.kpxe", "snponly.efi"):
        (src / n).write_bytes(n.encode() * 10)
    (tmp_path / "real.efi").write_bytes(b"EFI")
    os.symlink(tmp_path / "real.efi", src / "ipxe.efi")
    got = populate_root(tmp_path / "tftp", src)
    assert sorted(got) == ["ipxe.efi", "snponly.efi", "undionly.kpxe"]
    dst = tmp_path / "tftp" / "ipxe.efi"
    assert not dst.is_symlink() and dst.read_bytes() == b"EFI"
    (tmp_path / "real.efi").write_bytes(b"EFI2")
    populate_root(tmp_path / "tftp", src)
    assert dst.read_bytes() == b"EFI2"


# ------------------------------------------------------------------ server on loopback
class Client:
    def __init__(self, port: int, source: str = "127.0.0.1"):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((source, 0))
        self.s.settimeout(5)
        self.server = ("127.0.0.1", port)

    def get(self, name: str, ack: bool = True, **opts) -> tuple[bytes, dict]:
        self.s.sendto(rrq(name, **opts), self.server)
        data, peer = self.s.recvfrom(70000)
        oack = {}
        blksize = int(opts.get("blksize", 512))
        if data[:2] == b"\x00\x06":
            oack = codec.decode_oack(data)
            blksize = int(oack.get("blksize", 512))
            self.s.sendto(struct.pack("!HH", 4, 0), peer)
            data, peer = self.s.recvfrom(70000)
        out = bytearray()
        expect = 1
        while True:
            if data[:2] == b"\x00\x05":
                raise Refused(*codec.decode_error(data))
            op, blk = struct.unpack("!HH", data[:4])
            assert op == 3
            if blk == expect & 0xFFFF:
                out += data[4:]
                expect += 1
            if ack:
                self.s.sendto(struct.pack("!HH", 4, blk), peer)
            if len(data) - 4 < blksize and blk == (expect - 1) & 0xFFFF:
                return bytes(out), oack
            data, peer = self.s.recvfrom(70000)

    def close(self):
        self.s.close()


def wait_for(cond, seconds: float = 5.0) -> bool:
    """The client is done when the last block arrives; the server when the last ACK does."""
    stop = threading.Event()
    for _ in range(int(seconds / 0.02)):
        if cond():
            return True
        stop.wait(0.02)
    return cond()


class Events:
    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def event(self, kind, message="", **kw):
        with self.lock:
            self.seen.append((kind, message, kw))


@pytest.fixture
def server(root):
    (root / "big.bin").write_bytes(os.urandom(300_000))
    ev = Events()
    srv = TftpServer(str(root), ["127.0.0.1:0"], events=ev)
    srv.bind()
    th = threading.Thread(target=srv.serve, daemon=True)
    th.start()
    try:
        yield srv, srv.addresses[0][1], ev
    finally:
        srv.shutdown()
        th.join(5)
    assert not th.is_alive()


def test_server_sends_files_with_options(server, root):
    srv, port, ev = server
    c = Client(port)
    try:
        data, oack = c.get("big.bin", blksize=1468, tsize=0)
        assert data == (root / "big.bin").read_bytes()
        assert oack == {"blksize": "1468", "tsize": "300000"}
        data, oack = c.get("a.bin")  # no options: DATA 1 straight away, exact multiple of 500? no
        assert data == b"A" * 1000 and oack == {}
        data, oack = c.get("big.bin", windowsize=8, blksize=1024)
        assert data == (root / "big.bin").read_bytes() and oack["windowsize"] == "8"
    finally:
        c.close()
    assert wait_for(lambda: srv.stats().get("completed") == 3), srv.stats()


def test_exact_multiple_of_blksize_ends_with_empty_block(server, root):
    (root / "even.bin").write_bytes(b"E" * 1024)
    c = Client(server[1])
    try:
        assert c.get("even.bin")[0] == b"E" * 1024
    finally:
        c.close()


def test_refusals_are_error_packets(server, root):
    srv, port, _ = server
    c = Client(port)
    try:
        for name in ("../secret", "/etc/passwd", "out", "missing"):
            with pytest.raises(Refused) as e:
                c.get(name)
            assert e.value.code in (1, 2), name
        c.s.sendto(struct.pack("!H", 2) + b"new\0octet\0", c.server)
        data, _ = c.s.recvfrom(1000)
        assert codec.decode_error(data)[0] == 2
    finally:
        c.close()
    assert srv.stats()["refused"] == 5


def test_malformed_packets_are_counted_and_serving_goes_on(server, root):
    srv, port, _ = server
    c = Client(port)
    try:
        for junk in (b"", b"\xff\xff", b"\x00\x01noterminator", b"\x00\x04\x00\x01", os.urandom(700)):
            c.s.sendto(junk, c.server)
        assert c.get("a.bin")[0] == b"A" * 1000
    finally:
        c.close()
    assert wait_for(lambda: srv.stats().get("malformed", 0) >= 4), srv.stats()


def test_stuck_client_does_not_block_others(server, root):
    srv, port, ev = server
    stuck = Client(port)
    try:
        stuck.s.sendto(rrq("big.bin", blksize=1468), stuck.server)
        stuck.s.recvfrom(1000)  # the OACK arrives, never acknowledged
        results = []

        def fetch(i):
            c = Client(port, f"127.0.0.{2 + i}")
            try:
                results.append(c.get("big.bin", blksize=1468)[0])
            finally:
                c.close()

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        want = (root / "big.bin").read_bytes()
        assert len(results) == 8 and all(r == want for r in results)
        # the stuck one is dropped after a few resends, without an ERROR
        assert wait_for(lambda: srv.stats()["active"] == 0, 10), srv.stats()
        assert srv.stats()["unheard"] == 1
    finally:
        stuck.close()


def received(sock: socket.socket, quiet: float) -> list[tuple[bytes, tuple]]:
    """Every datagram until none came for `quiet` seconds."""
    out = []
    sock.settimeout(quiet)
    while True:
        try:
            out.append(sock.recvfrom(70000))
        except TimeoutError:
            return out


def test_silent_requests_are_bounded_in_time_packets_and_per_client(server, root):
    """Finding 8 on loopback: RRQs asking timeout=255 and never answering get the
    timeout refused, at most three packets each (no ERROR), and hold no slot for long;
    one address gets at most MAX_PER_CLIENT transfers at a time."""
    srv, port, ev = server
    attacker = Client(port, "127.0.0.20")
    try:
        for _ in range(MAX_PER_CLIENT + 4):
            attacker.s.sendto(rrq("big.bin", timeout=255), attacker.server)
        attacker.s.sendto(rrq("big.bin", timeout=255, blksize=1468), attacker.server)
        got = received(attacker.s, 3.0)
        by_tid: dict[int, list[bytes]] = {}
        for data, peer in got:
            by_tid.setdefault(peer[1], []).append(data)
        assert len(by_tid) == MAX_PER_CLIENT  # the other requests got nothing at all
        for packets in by_tid.values():
            assert 1 <= len(packets) <= UNHEARD_SENDS
            assert all(p[:2] in (b"\x00\x03", b"\x00\x06") for p in packets)  # no ERROR
            if packets[0][:2] == b"\x00\x06":
                assert "timeout" not in codec.decode_oack(packets[0])
        assert wait_for(lambda: srv.stats()["active"] == 0, 10), srv.stats()
        st = srv.stats()
        assert st["dropped_per_client"] == 5 and st["unheard"] == MAX_PER_CLIENT
    finally:
        attacker.close()


def test_a_full_table_of_silent_transfers_makes_room_for_a_real_client(root):
    (root / "f.bin").write_bytes(os.urandom(5000))
    srv = TftpServer(str(root), ["127.0.0.1:0"], max_transfers=4)
    srv.bind()
    th = threading.Thread(target=srv.serve, daemon=True)
    th.start()
    port = srv.addresses[0][1]
    silent = [Client(port, f"127.0.0.{30 + i}") for i in range(4)]
    try:
        for c in silent:
            c.s.sendto(rrq("f.bin"), c.server)
            c.s.recvfrom(1000)
        assert srv.stats()["active"] == 4
        real = Client(port, "127.0.0.40")
        try:
            assert real.get("f.bin")[0] == (root / "f.bin").read_bytes()
        finally:
            real.close()
        assert srv.stats()["evicted_unheard"] == 1
    finally:
        for c in silent:
            c.close()
        srv.shutdown()
        th.join(5)


def test_events_name_the_file_and_client(server):
    srv, port, ev = server
    c = Client(port)
    try:
        c.get("a.bin")
    finally:
        c.close()
    assert wait_for(lambda: any(k == "boot.tftp" for k, *_ in ev.seen))
    kind, msg, kw = next(e for e in ev.seen if e[0] == "boot.tftp")
    assert "a.bin" in msg and kw["ip"] == "127.0.0.1" and kw["data"]["status"] == "sent"


def test_lost_block_is_resent_and_transfer_completes(server, root):
    srv, port, _ = server
    c = Client(port)
    try:
        c.s.sendto(rrq("a.bin"), c.server)
        first, peer = c.s.recvfrom(1000)
        again, peer2 = c.s.recvfrom(1000)  # no ACK sent: the server resends block 1
        assert first == again and first[:4] == b"\x00\x03\x00\x01" and peer == peer2
        c.s.sendto(struct.pack("!HH", 4, 1), peer)
        data, _ = c.s.recvfrom(1000)
        while data[:4] == first[:4]:  # a resend may still be in flight
            data, _ = c.s.recvfrom(1000)
        assert data[:4] == b"\x00\x03\x00\x02" and len(data) == 4 + 488
        c.s.sendto(struct.pack("!HH", 4, 2), peer)
    finally:
        c.close()
    assert wait_for(lambda: srv.stats().get("completed") == 1), srv.stats()
    assert srv.stats()["retransmits"] >= 1


class RecordingSocket:
    """Collects what a Transfer sends (the state machine without a network)."""

    def __init__(self):
        self.sent: list[bytes] = []

    def fileno(self):
        return -1

    def send(self, data):
        self.sent.append(bytes(data))

    def sendmsg(self, parts):
        self.sent.append(b"".join(bytes(p) for p in parts))

    def recv(self, n):
        raise BlockingIOError


def test_block_numbers_wrap_past_65535():
    from netservices.tftp.server import Transfer

    blob = os.urandom(8 * 70_000 + 3)  # 70 001 blocks of 8 bytes
    sock = RecordingSocket()
    t = Transfer(sock, ("127.0.0.1", 1), "/x", "x", memoryview(blob),
                 policy.negotiate({"blksize": "8"}, len(blob)))
    t.send_window(0.0)
    assert sock.sent[-1][:2] == b"\x00\x06"  # the OACK first
    assert t.on_ack(0)
    got = bytearray()
    t.send_window(0.0)
    while True:
        pkt = sock.sent[-1]
        op, wire = struct.unpack("!HH", pkt[:4])
        assert op == 3
        got += pkt[4:]
        assert t.on_ack(wire)
        if t.done:
            break
        t.send_window(0.0, resend=False)
    assert bytes(got) == blob and t.acked == 70_001
    assert not t.on_ack(5)  # a stale ACK after the end moves nothing


def test_window_resends_from_the_last_ack():
    from netservices.tftp.server import Transfer

    blob = bytes(range(256)) * 8  # 2048 bytes: 4 blocks of 512 + an empty one
    sock = RecordingSocket()
    t = Transfer(sock, ("127.0.0.1", 1), "/x", "x", memoryview(blob),
                 policy.negotiate({"windowsize": "3"}, len(blob)))
    assert t.on_ack(0)  # OACK acknowledged
    t.send_window(0.0)
    assert [struct.unpack("!H", p[2:4])[0] for p in sock.sent] == [1, 2, 3]
    assert t.on_ack(1)  # blocks 2 and 3 were lost: the client acks 1
    sock.sent.clear()
    t.send_window(0.0)  # resend from 2
    assert [struct.unpack("!H", p[2:4])[0] for p in sock.sent] == [2, 3, 4]


def test_file_rewritten_in_place_mid_transfer_and_large_files(server, root):
    srv, port, _ = server
    original = (root / "big.bin").read_bytes()
    c = Client(port)
    try:
        c.s.sendto(rrq("big.bin"), c.server)
        first, peer = c.s.recvfrom(1000)
        with open(root / "big.bin", "r+b") as f:  # like `cp` over it: same inode, truncated
            f.truncate(10)
        c.s.sendto(struct.pack("!HH", 4, 1), peer)
        got = bytearray(first[4:])
        blk = 1
        while True:
            data, _ = c.s.recvfrom(1000)
            n = struct.unpack("!H", data[2:4])[0]
            if n == (blk + 1) & 0xFFFF:
                got += data[4:]
                blk += 1
            c.s.sendto(struct.pack("!HH", 4, n), peer)
            if len(data) < 516 and n == blk & 0xFFFF:
                break
        assert bytes(got) == original  # the snapshot taken when the transfer began
        # a file above the snapshot size is read block by block
        for cache in [srv.files]:
            cache.SNAPSHOT_MAX = 1000
        (root / "large.bin").write_bytes(os.urandom(5000))
        assert c.get("large.bin", blksize=1468)[0] == (root / "large.bin").read_bytes()
    finally:
        c.close()


# ------------------------------------------------------------------ worker processes
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostsByIp:
    def host_by_ip(self, ip):
        return HostRecord(name="node1", id=7, macs=("52:54:00:00:00:07",), mode="netboot", ip=ip)


def test_worker_pool_serves_and_the_parent_adds_the_host(root):
    from netservices.tftp.workers import WorkerPool

    data = os.urandom(200_000)
    (root / "f.bin").write_bytes(data)
    ev = Events()
    pool = WorkerPool(str(root), [f"127.0.0.1:{free_udp_port()}"], 2, events=ev,
                      hosts=HostsByIp())
    port = int(pool.listen[0].rsplit(":", 1)[1])
    th = threading.Thread(target=pool.run, daemon=True)
    th.start()
    try:
        assert wait_for(lambda: pool.stats().get("workers") == 2, 20)
        pids = set(pool.per_worker())
        for _ in range(8):  # a new client socket (source port) each time
            c = Client(port)
            try:
                assert c.get("f.bin", blksize="1468")[0] == data
            finally:
                c.close()
        assert wait_for(lambda: len(ev.seen) == 8)
        assert all(kw["host_id"] == 7 and kw["mac"] == "52:54:00:00:00:07" for _, _, kw in ev.seen)
        assert {kw["data"]["worker"] for _, _, kw in ev.seen} <= pids
        assert wait_for(lambda: pool.stats().get("completed") == 8)
    finally:
        pool.shutdown()
        th.join(10)
    assert not th.is_alive()
    assert all(w.proc.poll() is not None for w in pool.workers.values())


def test_worker_pool_reports_an_address_taken_and_a_worker_that_cannot_start(root, monkeypatch):
    from netservices.tftp import workers
    from netservices.tftp.workers import WorkerFailed, WorkerPool

    monkeypatch.setattr(workers, "BIND_RETRY_SECONDS", 0.3)  # a taken port is retried that long
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        pool = WorkerPool(str(root), [f"127.0.0.1:{taken.getsockname()[1]}"], 2)
        with pytest.raises(OSError, match="in use"):
            pool.run()
    pool = WorkerPool(str(root), [f"127.0.0.1:{free_udp_port()}"], 2,
                      python="/bin/false")  # starts, and exits at once
    with pytest.raises(WorkerFailed):
        pool.run()
    assert pool.sockets == [] and pool.workers == {}


def settled(read, every: float, timeout: float = 15) -> object:
    """`read()` once two reads `every` seconds apart agree."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        threading.Event().wait(every)
        now = read()
        if now == last:
            return now
        last = now
    return last


@pytest.mark.parametrize("busy_poll_us", [0, 20_000])
def test_worker_busy_polls_only_while_transfers_are_active(root, busy_poll_us):
    """With busy polling on, a worker waiting for the next ACK polls without sleeping
    (and, with a window this long, the ACK comes within it); with no transfer, or
    with it off, it never does."""
    from netservices.tftp.workers import WorkerPool

    data = os.urandom(100_000)
    (root / "f.bin").write_bytes(data)
    pool = WorkerPool(str(root), [f"127.0.0.1:{free_udp_port()}"], 1, busy_poll_us=busy_poll_us)
    port = int(pool.listen[0].rsplit(":", 1)[1])
    th = threading.Thread(target=pool.run, daemon=True)
    th.start()
    try:
        assert wait_for(lambda: pool.stats().get("workers") == 1, 20)
        c = Client(port)
        try:
            assert c.get("f.bin")[0] == data  # 196 lock-step blocks
        finally:
            c.close()
        assert wait_for(lambda: pool.stats().get("completed") == 1)
        stats = pool.stats()
        if busy_poll_us:
            # it spins while a transfer waits for its ACK; whether an ACK lands inside the
            # window (a hit) depends on the machine's load, so only that hits are counted
            assert stats.get("busy_polls", 0) > 0 and "busy_poll_hits" in stats, stats
            # the worker reports its counters about once a second: the report after the
            # one that said "completed" may still count the transfer's last polls
            idle = settled(lambda: pool.stats()["busy_polls"], every=1.2)
            threading.Event().wait(2.5)
            assert pool.stats()["busy_polls"] == idle  # no transfer: it sleeps in epoll
        else:
            assert "busy_polls" not in stats, stats
    finally:
        pool.shutdown()
        th.join(10)
    assert not th.is_alive()
