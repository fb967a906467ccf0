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
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from ..listen import parse_listen
from . import wire
from .resolver import Counters, Resolver
from .zone import build_zone

log = logging.getLogger("nixie.dns")
UPSTREAM_TIMEOUT = 2.0
TCP_IDLE_SECONDS = 10.0
MAX_TCP_CLIENTS = 64


@dataclass
class Pending:
    client: tuple
    sock: socket.socket
    query: wire.Query
    deadline: float
    upstream_index: int
    raw: bytes


@dataclass
class Loop:
    """One UDP loop's own state."""

    resolver: Resolver
    udp: list[socket.socket]
    upstream: socket.socket
    pending: dict[int, Pending] = field(default_factory=dict)


class DnsService:
    name = "dns"

    def __init__(self, resolver: Resolver, listen: list[str], directory=None, *,
                 domain: str = "lan", network: str | None = None, refresh_seconds: float = 2.0,
                 ttl: int = 60, workers: int = 1):
        self.resolver = resolver
        self.views = [resolver] + [
            Resolver(resolver.zone, resolver.clients, resolver.upstreams, resolver.cache)
            for _ in range(max(1, workers) - 1)]
        self.listen = listen
        self.directory = directory
        self.domain = domain
        self.network = network
        self.refresh_seconds = refresh_seconds
        self.ttl = ttl
        self._socks: list[socket.socket] = []
        self._wake_r, self._wake_w = None, None
        self._loops: list[Loop] = []
        self._tcp_clients = threading.BoundedSemaphore(MAX_TCP_CLIENTS)
        self._stop: threading.Event | None = None
        self.bound: list[tuple[str, int]] = []

    # ---------------------------------------------------------------- zone
    def refresh(self) -> bool:
        """Rebuild the zone from the directory; True if it changed."""
        if self.directory is None:
            return False
        records = tuple(self.directory.name_records())
        if records == getattr(self, "_last_records", None):
            return False
        self._last_records = records
        zone = build_zone(self.domain, records, network=self.network, ttl=self.ttl,
                          serial=int(time.time()))
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
            udp, tcp = self._bind()
            self._wake_r, self._wake_w = socket.socketpair()
            self._socks += [self._wake_r, self._wake_w]
            self._loops = []
            for view, socks in zip(self.views, udp, strict=True):
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.setblocking(False)
                self._socks.append(up)
                self._loops.append(Loop(view, socks, up))
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

    def _loop(self, lp: Loop, tcp: list[socket.socket], stop: threading.Event) -> None:
        sel = selectors.DefaultSelector()
        try:
            for u in lp.udp:
                sel.register(u, selectors.EVENT_READ, "udp")
            for t in tcp:
                sel.register(t, selectors.EVENT_READ, "tcp")
            sel.register(lp.upstream, selectors.EVENT_READ, "up")
            if tcp:  # the first loop also wakes on shutdown()
                sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not stop.is_set():
                for key, _ in sel.select(0.25):
                    kind = key.data
                    if kind == "udp":
                        self._drain_udp(lp, key.fileobj)
                    elif kind == "up":
                        self._drain_upstream(lp)
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
        ups = lp.resolver.upstreams
        for _ in range(8):
            new_id = random.getrandbits(16)
            if new_id not in lp.pending:
                break
        else:
            return
        lp.pending[new_id] = Pending(client, sock, q, time.monotonic() + UPSTREAM_TIMEOUT, index, raw)
        try:
            lp.upstream.sendto(struct.pack("!H", new_id) + raw[2:], ups[index % len(ups)])
        except OSError:
            lp.resolver.counters.upstream_errors += 1

    def _drain_upstream(self, lp: Loop) -> None:
        ups = set(lp.resolver.upstreams)
        for _ in range(256):
            try:
                data, addr = lp.upstream.recvfrom(65535)
            except (BlockingIOError, InterruptedError, OSError):
                return
            if len(data) < 12 or (addr[0], addr[1]) not in ups:
                continue
            p = lp.pending.pop(struct.unpack_from("!H", data)[0], None)
            if p is None:
                continue
            if data[12:12 + len(p.query.question)].lower() != p.query.question.lower():
                lp.resolver.counters.upstream_errors += 1
                continue
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
        late = [k for k, p in lp.pending.items() if p.deadline <= t]
        for k in late:
            p = lp.pending.pop(k)
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
        if not self._tcp_clients.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._serve_tcp, args=(conn, addr), daemon=True,
                         name="dns-tcp").start()

    def _serve_tcp(self, conn: socket.socket, addr) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(TCP_IDLE_SECONDS)
            while self._stop is not None and not self._stop.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                out = self.resolver.handle(data, addr[0], time.time(), tcp=True)
                if out is None:
                    return  # malformed over TCP: close the stream
                if type(out) is tuple:
                    out = self._forward_tcp(out[1], data)
                conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            conn.close()
            self._tcp_clients.release()

    def _forward_tcp(self, q: wire.Query, raw: bytes) -> bytes:
        for host, port in self.resolver.upstreams:
            try:
                with socket.create_connection((host, port), timeout=UPSTREAM_TIMEOUT) as s:
                    s.sendall(struct.pack("!H", len(raw)) + raw)
                    head = _recv_exact(s, 2)
                    data = _recv_exact(s, struct.unpack("!H", head)[0]) if head else None
            except OSError:
                continue
            if data and len(data) >= 12 and data[12:12 + len(q.question)].lower() == q.question.lower():
                self.resolver.cache.put((q.key, q.qtype, q.qclass), data, time.time())
                return struct.pack("!H", q.id) + data[2:]
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
        return {**total.to_dict(), "cache_entries": len(self.resolver.cache),
                "zone_records": len(self.resolver.zone.records),
                "pending": sum(len(lp.pending) for lp in self._loops), "workers": len(self.views)}


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
