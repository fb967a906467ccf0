"""The DNS service: UDP and TCP listeners, upstream sockets, a zone refresher.

Each UDP loop is one thread over a selector: a query is parsed, answered from
the precompiled zone or the cache, or forwarded upstream with a fresh ID and
answered when the upstream replies (SERVFAIL on timeout). With `workers` > 1,
every listen address gets that many SO_REUSEPORT sockets, one per loop; each
loop has its own `Resolver` view (counters, memo), upstream socket and pending
map, and all share the zone and the forward cache. TCP connections (accepted by
the first loop) get a thread each and forward over TCP. The zone is rebuilt
from the `NameDirectory` every `refresh_seconds` in its own thread and swapped
in, so the query path never touches the database.
"""

from __future__ import annotations

import logging
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..listen import parse_listen
from . import wire
from .resolver import Counters, Resolver
from .zone import build_zone, lan_records

log = logging.getLogger("nixie.dns")
UPSTREAM_TIMEOUT = 2.0
MAX_PENDING = 1024  # upstream queries in flight per loop (each holds a socket)
TCP_IDLE_SECONDS = 5.0
MAX_TCP_CLIENTS = 64
MAX_TCP_PER_CLIENT = 8


@dataclass(eq=False)
class Pending:
    """One query sent upstream, on its own socket (connected to `server`)."""

    client: tuple
    sock: socket.socket  # the listening socket to answer the client on
    query: wire.Query
    deadline: float
    upstream_index: int
    raw: bytes
    up: socket.socket
    qid: bytes  # the ID sent upstream, packed


@dataclass
class Loop:
    """One UDP loop's own state."""

    resolver: Resolver
    udp: list[socket.socket]
    pending: dict[int, Pending] = field(default_factory=dict)  # by upstream socket fd
    sel: selectors.BaseSelector | None = None


@dataclass(eq=False)
class TcpClient:
    ip: str
    conn: socket.socket
    idle_since: float | None  # waiting for a query since (monotonic); None while answering


def upstream_reply_matches(data: bytes, qid: bytes, question: bytes) -> bool:
    """Is `data` the answer to the query sent with `qid` and `question`? (The socket is
    connected: the kernel already dropped datagrams from other addresses and ports.)"""
    return len(data) >= 12 + len(question) and data[:2] == qid and data[2] & 0x80 != 0 \
        and data[12:12 + len(question)].lower() == question.lower()


class DnsService:
    name = "dns"

    def __init__(self, resolver: Resolver, listen: list[str], directory=None, *,
                 domain: str = "lan", network: str | None = None, refresh_seconds: float = 2.0,
                 ttl: int = 60, workers: int = 1, router_ip: str | None = None,
                 router_names: tuple[str, ...] = (), network6: str | None = None,
                 router_ip6: str | None = None, prepare: Callable[[], None] | None = None):
        self.resolver = resolver
        self.prepare = prepare  # before binding: e.g. put the LAN's IPv6 address in place
        self.views = [resolver] + [
            Resolver(resolver.zone, resolver.clients, resolver.upstreams, resolver.cache)
            for _ in range(max(1, workers) - 1)]
        self.listen = listen
        self.directory = directory
        self.domain = domain
        self.network = network
        self.refresh_seconds = refresh_seconds
        self.ttl = ttl
        self.router_ip = router_ip
        self.network6 = network6
        self.router_ip6 = router_ip6
        self.router_names = tuple(router_names)
        self._socks: list[socket.socket] = []
        self._wake_r, self._wake_w = None, None
        self._loops: list[Loop] = []
        self._tcp_lock = threading.Lock()
        self._tcp: dict[socket.socket, TcpClient] = {}
        self.tcp_counters = {"tcp_refused_per_client": 0, "tcp_evicted_idle": 0,
                             "tcp_idle_closed": 0}
        self._stop: threading.Event | None = None
        self.bound: list[tuple[str, int]] = []

    # ---------------------------------------------------------------- zone
    def refresh(self) -> bool:
        """Rebuild the zone from the directory; True if it changed."""
        if self.directory is None:
            return False
        records = tuple(lan_records(self.directory.name_records(), router_ip=self.router_ip,
                                    router_names=self.router_names, router_ip6=self.router_ip6))
        if records == getattr(self, "_last_records", None):
            return False
        self._last_records = records
        zone = build_zone(self.domain, records, network=self.network, ttl=self.ttl,
                          serial=int(time.time()), network6=self.network6)
        for view in self.views:
            view.zone = zone
        return True

    def _refresher(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep the last good zone
                log.warning("zone refresh failed", exc_info=True)

    # ---------------------------------------------------------------- run
    def _bind(self) -> tuple[list[list[socket.socket]], list[socket.socket]]:
        """Per worker its UDP sockets (one per listen address), and the TCP listeners."""
        n = len(self.views)
        udp: list[list[socket.socket]] = [[] for _ in range(n)]
        tcp = []
        for addr in self.listen:
            fam, host, port = parse_listen(addr)
            for w in range(n):
                u = socket.socket(fam, socket.SOCK_DGRAM)
                self._socks.append(u)
                u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if n > 1:
                    u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                u.bind((host, port))
                port = u.getsockname()[1]
                u.setblocking(False)
                udp[w].append(u)
            t = socket.socket(fam, socket.SOCK_STREAM)
            self._socks.append(t)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((host, port))
            t.listen(64)
            t.setblocking(False)
            tcp.append(t)
            self.bound.append((host, port))
        return udp, tcp

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self.bound = []
        self._socks = []
        try:
            self.refresh()
        except Exception:  # noqa: BLE001
            log.warning("initial zone load failed", exc_info=True)
        threads: list[threading.Thread] = []
        try:
            if self.prepare is not None:
                self.prepare()
            udp, tcp = self._bind()
            self._wake_r, self._wake_w = socket.socketpair()
            self._socks += [self._wake_r, self._wake_w]
            self._loops = [Loop(view, socks) for view, socks in zip(self.views, udp, strict=True)]
            threads.append(threading.Thread(target=self._refresher, args=(stop,),
                                            name="dns-refresh", daemon=True))
            for lp in self._loops[1:]:
                threads.append(threading.Thread(target=self._loop, args=(lp, [], stop),
                                                name="dns-udp", daemon=True))
            for t in threads:
                t.start()
            log.info("dns listening", extra={"listen": ",".join(f"{h}:{p}" for h, p in self.bound),
                                             "workers": len(self._loops)})
            self._loop(self._loops[0], tcp, stop)
        finally:
            for s in self._socks:
                s.close()
            self._socks = []
            for t in threads:
                t.join(timeout=1)
            with self._tcp_lock:
                for c in list(self._tcp.values()):
                    _shutdown(c.conn)

    def _loop(self, lp: Loop, tcp: list[socket.socket], stop: threading.Event) -> None:
        sel = lp.sel = selectors.DefaultSelector()
        try:
            for u in lp.udp:
                sel.register(u, selectors.EVENT_READ, "udp")
            for t in tcp:
                sel.register(t, selectors.EVENT_READ, "tcp")
            if tcp:  # the first loop also wakes on shutdown()
                sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not stop.is_set():
                for key, _ in sel.select(0.25):
                    kind = key.data
                    if kind == "udp":
                        self._drain_udp(lp, key.fileobj)
                    elif type(kind) is Pending:
                        self._on_upstream(lp, kind)
                    elif kind == "tcp":
                        self._accept(key.fileobj)
                    else:
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                if lp.pending:
                    self._expire(lp)
        except OSError:
            if not stop.is_set():
                raise
        finally:
            for p in list(lp.pending.values()):
                p.up.close()
            lp.pending.clear()
            sel.close()

    def _drain_udp(self, lp: Loop, sock: socket.socket) -> None:
        handle, recvfrom, sendto, clock = lp.resolver.handle, sock.recvfrom, sock.sendto, time.time
        for _ in range(256):  # bounded, so the upstream socket gets its turn
            try:
                data, addr = recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            out = handle(data, addr[0], clock())
            if out is None:
                continue
            if type(out) is tuple:
                self._forward(lp, out[1], data, addr, sock, 0)
                continue
            try:
                sendto(out, addr)
            except OSError:
                pass

    def _forward(self, lp: Loop, q: wire.Query, raw: bytes, client, sock, index: int) -> None:
        """Send `q` to upstream `index` from a socket of its own (see the module doc)."""
        ups = lp.resolver.upstreams
        if len(lp.pending) >= MAX_PENDING or lp.sel is None:
            lp.resolver.counters.upstream_errors += 1
            return  # the client asks again
        server = ups[index % len(ups)]
        qid = struct.pack("!H", secrets.randbits(16))
        up = socket.socket(socket.AF_INET6 if ":" in server[0] else socket.AF_INET,
                           socket.SOCK_DGRAM)
        try:
            up.setblocking(False)
            up.connect(server)  # a random source port, and only this server's datagrams
            up.send(qid + raw[2:])
        except OSError:
            up.close()
            lp.resolver.counters.upstream_errors += 1
            if index + 1 < len(ups):
                self._forward(lp, q, raw, client, sock, index + 1)
            return
        p = Pending(client, sock, q, time.monotonic() + UPSTREAM_TIMEOUT, index, raw, up, qid)
        lp.pending[up.fileno()] = p
        lp.sel.register(up, selectors.EVENT_READ, p)

    def _drop_pending(self, lp: Loop, p: Pending) -> None:
        lp.pending.pop(p.up.fileno(), None)
        if lp.sel is not None:
            try:
                lp.sel.unregister(p.up)
            except (KeyError, ValueError):
                pass
        p.up.close()

    def _on_upstream(self, lp: Loop, p: Pending) -> None:
        counters = lp.resolver.counters
        for _ in range(16):  # bounded: a flood of forgeries must not hold the loop
            try:
                data = p.up.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable: the timeout moves on to the next upstream
                return
            if not upstream_reply_matches(data, p.qid, p.query.question):
                counters.upstream_mismatched += 1
                continue  # forged or stray: keep waiting for the real answer
            _count_answer(counters, p.deadline)
            self._drop_pending(lp, p)
            self._answer(lp, p, data)
            return

    def _answer(self, lp: Loop, p: Pending, data: bytes) -> None:
        reply = struct.pack("!H", p.query.id) + data[2:]
        lp.resolver.cache.put((p.query.key, p.query.qtype, p.query.qclass), data, time.time())
        if len(reply) > p.query.udp_limit():
            cached = lp.resolver.cache.get(p.query, time.time(), p.query.udp_limit())
            flags = struct.unpack_from("!H", data, 2)[0]
            reply = cached or wire.truncated(p.query, flags)
        try:
            p.sock.sendto(reply, p.client)
        except OSError:
            pass

    def _expire(self, lp: Loop) -> None:
        t = time.monotonic()
        late = [p for p in lp.pending.values() if p.deadline <= t]
        for p in late:
            self._drop_pending(lp, p)
            if p.upstream_index + 1 < len(lp.resolver.upstreams):
                self._forward(lp, p.query, p.raw, p.client, p.sock, p.upstream_index + 1)
                continue
            lp.resolver.counters.upstream_timeouts += 1
            try:
                p.sock.sendto(wire.error(p.query, wire.SERVFAIL), p.client)
            except OSError:
                pass

    # ---------------------------------------------------------------- tcp
    def _accept(self, lsock: socket.socket) -> None:
        try:
            conn, addr = lsock.accept()
        except OSError:
            return
        client = TcpClient(addr[0], conn, time.monotonic())
        with self._tcp_lock:
            if sum(1 for c in self._tcp.values() if c.ip == client.ip) >= MAX_TCP_PER_CLIENT:
                self.tcp_counters["tcp_refused_per_client"] += 1
                conn.close()
                return
            if len(self._tcp) >= MAX_TCP_CLIENTS:
                idle = [c for c in self._tcp.values() if c.idle_since is not None]
                if not idle:
                    conn.close()
                    return
                victim = min(idle, key=lambda c: c.idle_since)
                del self._tcp[victim.conn]  # its thread finds it gone and just closes
                _shutdown(victim.conn)
                self.tcp_counters["tcp_evicted_idle"] += 1
            self._tcp[conn] = client
        threading.Thread(target=self._serve_tcp, args=(client,), daemon=True,
                         name="dns-tcp").start()

    def _serve_tcp(self, client: TcpClient) -> None:
        conn = client.conn
        try:
            conn.setblocking(True)
            while self._stop is not None and not self._stop.is_set():
                deadline = time.monotonic() + TCP_IDLE_SECONDS
                head = _recv_exact(conn, 2, deadline)
                data = _recv_exact(conn, struct.unpack("!H", head)[0], deadline) if head else None
                if data is None:
                    return
                with self._tcp_lock:
                    if self._tcp.get(conn) is not client:
                        return  # evicted while the query came in
                    client.idle_since = None
                out = self.resolver.handle(data, client.ip, time.time(), tcp=True)
                if out is None:
                    return  # malformed over TCP: close the stream
                if type(out) is tuple:
                    out = self._forward_tcp(out[1], data)
                conn.sendall(struct.pack("!H", len(out)) + out)
                with self._tcp_lock:
                    client.idle_since = time.monotonic()
        except TimeoutError:
            with self._tcp_lock:
                self.tcp_counters["tcp_idle_closed"] += 1
        except OSError:
            pass
        finally:
            with self._tcp_lock:
                if self._tcp.get(conn) is client:
                    del self._tcp[conn]
            conn.close()

    def _forward_tcp(self, q: wire.Query, raw: bytes) -> bytes:
        for host, port in self.resolver.upstreams:
            qid = struct.pack("!H", secrets.randbits(16))
            deadline = time.monotonic() + UPSTREAM_TIMEOUT
            try:
                with socket.create_connection((host, port), timeout=UPSTREAM_TIMEOUT) as s:
                    s.sendall(struct.pack("!H", len(raw)) + qid + raw[2:])
                    head = _recv_exact(s, 2, deadline)
                    data = _recv_exact(s, struct.unpack("!H", head)[0], deadline) if head else None
            except OSError:
                continue
            if data and upstream_reply_matches(data, qid, q.question):
                _count_answer(self.resolver.counters, deadline)
                self.resolver.cache.put((q.key, q.qtype, q.qclass), data, time.time())
                return struct.pack("!H", q.id) + data[2:]
            if data:
                self.resolver.counters.upstream_mismatched += 1
        self.resolver.counters.upstream_timeouts += 1
        return wire.error(q, wire.SERVFAIL)

    # ---------------------------------------------------------------- control
    def shutdown(self) -> None:
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"x")
            except OSError:
                pass

    def stats(self) -> dict:
        total = Counters()
        for view in self.views:
            for k, v in view.counters.to_dict().items():
                setattr(total, k, getattr(total, k) + v)
        with self._tcp_lock:
            tcp = {**self.tcp_counters, "tcp_clients": len(self._tcp)}
        return {**total.to_dict(), **tcp, "cache_entries": len(self.resolver.cache),
                "zone_records": len(self.resolver.zone.records),
                "pending": sum(len(lp.pending) for lp in self._loops), "workers": len(self.views)}


def _shutdown(conn: socket.socket) -> None:
    """Wake the thread blocked reading `conn` (it then closes it)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _count_answer(counters: Counters, deadline: float) -> None:
    """One upstream answer and how long it took (asked UPSTREAM_TIMEOUT before `deadline`)."""
    counters.upstream_answers += 1
    counters.upstream_ms += int((time.monotonic() - deadline + UPSTREAM_TIMEOUT) * 1000)


def _recv_exact(conn: socket.socket, n: int, deadline: float) -> bytes | None:
    """`n` bytes, all before `deadline` (monotonic; TimeoutError after it), or None at EOF."""
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no whole message in time")
        conn.settimeout(left)
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
