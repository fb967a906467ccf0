"""The DNS service: UDP and TCP listeners, an upstream socket, a zone refresher.

The UDP loop is one thread per service over a selector: a query is parsed,
answered from the precompiled zone or the cache, or forwarded upstream with a
fresh ID and answered when the upstream replies (SERVFAIL on timeout). TCP
connections get a thread each and forward over TCP. The zone is rebuilt from
the `NameDirectory` every `refresh_seconds` in its own thread and swapped in,
so the query path never touches the database.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass

from . import wire
from .resolver import Resolver
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


def split_listen(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class DnsService:
    name = "dns"

    def __init__(self, resolver: Resolver, listen: list[str], directory=None, *,
                 domain: str = "lan", network: str | None = None, refresh_seconds: float = 2.0,
                 ttl: int = 60):
        self.resolver = resolver
        self.listen = listen
        self.directory = directory
        self.domain = domain
        self.network = network
        self.refresh_seconds = refresh_seconds
        self.ttl = ttl
        self._socks: list[socket.socket] = []
        self._wake_r, self._wake_w = None, None
        self._pending: dict[int, Pending] = {}
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
        self.resolver.zone = build_zone(self.domain, records, network=self.network, ttl=self.ttl,
                                        serial=int(time.time()))
        return True

    def _refresher(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep the last good zone
                log.warning("zone refresh failed", exc_info=True)

    # ---------------------------------------------------------------- run
    def _bind(self) -> tuple[list[socket.socket], list[socket.socket]]:
        udp, tcp = [], []
        for addr in self.listen:
            host, port = split_listen(addr)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            u = socket.socket(fam, socket.SOCK_DGRAM)
            u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            u.bind((host, port))
            port = u.getsockname()[1]
            t = socket.socket(fam, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((host, port))
            t.listen(64)
            for s in (u, t):
                s.setblocking(False)
            udp.append(u)
            tcp.append(t)
            self.bound.append((host, port))
        return udp, tcp

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self.bound = []
        self._pending = {}
        try:
            self.refresh()
        except Exception:  # noqa: BLE001
            log.warning("initial zone load failed", exc_info=True)
        udp, tcp = self._bind()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._socks = [*udp, *tcp, upstream, self._wake_r, self._wake_w]
        sel = selectors.DefaultSelector()
        for u in udp:
            sel.register(u, selectors.EVENT_READ, "udp")
        for t in tcp:
            sel.register(t, selectors.EVENT_READ, "tcp")
        sel.register(upstream, selectors.EVENT_READ, "up")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        refresher = threading.Thread(target=self._refresher, args=(stop,), name="dns-refresh",
                                     daemon=True)
        refresher.start()
        log.info("dns listening", extra={"listen": ",".join(f"{h}:{p}" for h, p in self.bound)})
        handle = self.resolver.handle
        try:
            while not stop.is_set():
                for key, _ in sel.select(0.25):
                    kind = key.data
                    if kind == "udp":
                        self._drain_udp(key.fileobj, upstream, handle)
                    elif kind == "up":
                        self._drain_upstream(upstream)
                    elif kind == "tcp":
                        self._accept(key.fileobj)
                    else:
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                if self._pending:
                    self._expire(upstream)
        finally:
            sel.close()
            for s in self._socks:
                s.close()
            self._socks = []
            refresher.join(timeout=1)

    def _drain_udp(self, sock: socket.socket, upstream: socket.socket, handle) -> None:
        for _ in range(256):  # bounded, so the upstream socket gets its turn
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            out = handle(data, addr[0], time.time())
            if out is None:
                continue
            if type(out) is tuple:
                self._forward(out[1], data, addr, sock, upstream, 0)
                continue
            try:
                sock.sendto(out, addr)
            except OSError:
                pass

    def _forward(self, q: wire.Query, raw: bytes, client, sock, upstream, index: int) -> None:
        ups = self.resolver.upstreams
        for _ in range(8):
            new_id = random.getrandbits(16)
            if new_id not in self._pending:
                break
        else:
            return
        self._pending[new_id] = Pending(client, sock, q, time.monotonic() + UPSTREAM_TIMEOUT,
                                        index, raw)
        try:
            upstream.sendto(struct.pack("!H", new_id) + raw[2:], ups[index % len(ups)])
        except OSError:
            self.resolver.counters.upstream_errors += 1

    def _drain_upstream(self, upstream: socket.socket) -> None:
        ups = set(self.resolver.upstreams)
        for _ in range(256):
            try:
                data, addr = upstream.recvfrom(65535)
            except (BlockingIOError, InterruptedError, OSError):
                return
            if len(data) < 12 or (addr[0], addr[1]) not in ups:
                continue
            p = self._pending.pop(struct.unpack_from("!H", data)[0], None)
            if p is None:
                continue
            if data[12:12 + len(p.query.question)].lower() != p.query.question.lower():
                self.resolver.counters.upstream_errors += 1
                continue
            reply = struct.pack("!H", p.query.id) + data[2:]
            self.resolver.cache.put((p.query.key, p.query.qtype, p.query.qclass), data, time.time())
            if len(reply) > p.query.udp_limit():
                cached = self.resolver.cache.get(p.query, time.time(), p.query.udp_limit())
                flags = struct.unpack_from("!H", data, 2)[0]
                reply = cached or wire.truncated(p.query, flags)
            try:
                p.sock.sendto(reply, p.client)
            except OSError:
                pass

    def _expire(self, upstream: socket.socket) -> None:
        t = time.monotonic()
        late = [k for k, p in self._pending.items() if p.deadline <= t]
        for k in late:
            p = self._pending.pop(k)
            if p.upstream_index + 1 < len(self.resolver.upstreams):
                self._forward(p.query, p.raw, p.client, p.sock, upstream, p.upstream_index + 1)
                continue
            self.resolver.counters.upstream_timeouts += 1
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
        z = self.resolver.zone
        return {**self.resolver.counters.to_dict(), "cache_entries": len(self.resolver.cache),
                "zone_records": len(z.records), "pending": len(self._pending)}


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
