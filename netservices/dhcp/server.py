"""The DHCP service: sockets and the group commit around an engine.

One thread, one UDP socket per port, bound to the LAN interface
(SO_BINDTODEVICE). The loop reads every datagram waiting (up to MAX_BATCH),
sends OFFERs and NAKs at once, holds ACKs, then commits the batch's lease
changes and events in one durable transaction and only then sends the held
ACKs: every lease is on disk before its ACK leaves, and the commit cost is
shared by the batch.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import socket
import struct
import threading
import time
from typing import Any

from .engine import (
    PXE_PORT,
    SERVER_PORT,
    AuthoritativeEngine,
    DhcpSettings,
    ProxyEngine,
    Reply,
    needs_restart,
)
from .store import LeaseStore

log = logging.getLogger("nixie.dhcp")

MAX_BATCH = 512
HOSTS_REFRESH_SECONDS = 5.0
SIOCSARP = 0x8955
ATF_COM = 0x02


def open_socket(interface: str, port: int, bind_ip: str = "0.0.0.0") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        for opt in (33, socket.SO_RCVBUF):  # 33: SO_RCVBUFFORCE (root), else capped
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                break
            except OSError:
                continue
        s.bind((bind_ip, port))
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"DHCP on {interface} port {port}: {e.strerror}") from None
    except BaseException:
        s.close()
        raise
    return s


def set_arp(sock: socket.socket, ip: str, mac: bytes, interface: str) -> None:
    """Add a neighbour entry so a unicast reply reaches a client that has no
    address yet and so cannot answer ARP (RFC 2131 4.1)."""
    import fcntl

    pa = struct.pack("!HH4s8x", socket.AF_INET, 0, socket.inet_aton(ip))
    pa = struct.pack("=H", socket.AF_INET) + pa[2:]
    ha = struct.pack("=H", 1) + mac[:6].ljust(14, b"\0")  # ARPHRD_ETHER
    req = pa + ha + struct.pack("=i", ATF_COM) + bytes(16) + interface.encode()[:15].ljust(16, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCSARP, req)


def _icmp_checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    total = (total & 0xFFFF) + (total >> 16)
    total += total >> 16
    return ~total & 0xFFFF


class IcmpProbe:
    """The conflict check: does anything answer a ping on this address?
    (Blocks the loop for up to `timeout` per new address: off by default.)"""

    def __init__(self, interface: str, timeout: float = 0.3):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def __call__(self, ip: str) -> bool:
        self.seq = (self.seq + 1) & 0xFFFF
        body = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq) + b"nixie-dhcp-probe"
        body = body[:2] + struct.pack("!H", _icmp_checksum(body)) + body[4:]
        try:
            self.sock.sendto(body, (ip, 0))
        except OSError:
            return False
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            data, addr = self.sock.recvfrom(2048)
            icmp = data[(data[0] & 15) * 4 :]
            if addr[0] == ip and len(icmp) >= 8 and icmp[0] == 0 and \
                    struct.unpack("!HH", icmp[4:8]) == (self.ident, self.seq):
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def _ack_address(reply: Reply) -> str:
    """The address an ACK hands out (BOOTP yiaddr)."""
    return socket.inet_ntoa(reply.payload[16:20])


def send_durable(send, acks: list, not_durable: set[str] | None) -> int:
    """Send the held ACKs whose lease is on disk; returns how many were held back."""
    held = 0
    for sock, reply in acks:
        if not_durable and _ack_address(reply) in not_durable:
            held += 1
            continue
        send(sock, reply)
    return held


class Committer:
    """Commits lease batches and then sends their held ACKs, on its own thread,
    so the loop keeps reading while SQLite syncs. Batches that queue up during a
    commit go together into the next one (group commit)."""

    def __init__(self, store: LeaseStore, send):
        self.store = store
        self.send = send
        self.commits = 0
        self.acks_not_durable = 0  # ACKs not sent: their lease could not be written
        self.error: BaseException | None = None
        self._queue: list[tuple[list, list, list]] = []
        self._cv = threading.Condition()
        self._closing = False
        self._idle = True
        self._thread = threading.Thread(target=self._run, name="dhcp-commit", daemon=True)
        self._thread.start()

    def submit(self, rows: list, events: list, acks: list) -> None:
        if self.error is not None:
            raise RuntimeError("lease commit failed") from self.error
        with self._cv:
            self._queue.append((rows, events, acks))
            self._cv.notify()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything submitted is committed and sent."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while (self._queue or not self._idle) and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)

    def close(self) -> None:
        self.drain()
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._idle = True
                    self._cv.notify_all()
                    self._cv.wait()
                if not self._queue and self._closing:
                    return
                batch, self._queue = self._queue, []
                self._idle = False
            rows = [r for b in batch for r in b[0]]
            events = [e for b in batch for e in b[1]]
            try:
                not_durable = self.store.commit(rows, events)
            except BaseException as e:  # noqa: BLE001 - reported to the loop, which stops
                log.error("lease commit failed; holding ACKs", exc_info=True)
                with self._cv:
                    self.error = e
                    self._queue.clear()
                    self._idle = True
                    self._cv.notify_all()
                return
            self.commits += 1
            for b in batch:
                self.acks_not_durable += send_durable(self.send, b[2], not_durable)


class DhcpService:
    """Authoritative or proxy DHCP on the LAN interface (a supervised service)."""

    name = "dhcp"

    def __init__(self, settings: DhcpSettings, store: LeaseStore, *, clock=time.time,
                 hosts_refresh: float = HOSTS_REFRESH_SECONDS, inline_commit: bool = False):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.hosts_refresh = hosts_refresh
        self.engine: AuthoritativeEngine | ProxyEngine | None = None
        self._socks: list[socket.socket] = []
        self._started = threading.Event()
        self.batches = 0
        # inline: the loop commits then sends (one thread, fewest wake-ups: best when a
        # commit is cheap); else a commit thread syncs while the loop keeps reading
        # (best when every commit waits for an fsync)
        self.inline_commit = inline_commit
        self.inline_commits = 0
        self.inline_not_durable = 0
        self._committer: Committer | None = None
        self._pending_settings: DhcpSettings | None = None

    @property
    def ready(self) -> threading.Event:
        return self._started

    def stats(self) -> dict[str, Any]:
        e = self.engine
        if e is None:
            return {}
        c = self._committer
        trouble = getattr(self.store, "disk_trouble", None)
        return {**e.stats(self.clock()), "batches": self.batches,
                "commits": (c.commits if c else 0) + self.inline_commits,
                "acks_not_durable": (c.acks_not_durable if c else 0) + self.inline_not_durable,
                "disk_trouble": trouble() if callable(trouble) else None}

    def shutdown(self) -> None:
        pass  # the loop polls with a timeout and sees the stop event

    def reconfigure(self, settings: DhcpSettings) -> bool:
        """Take new settings live: True when the loop will use them within its next
        wake-up (at most 0.5 s) with every lease kept; False when the change needs new
        sockets or another mode (`needs_restart`): then build a new service."""
        if needs_restart(self.settings, settings):
            return False
        self._pending_settings = settings
        return True

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        if s.mode == "proxy":
            self.engine = ProxyEngine(s)
            ports = (SERVER_PORT, PXE_PORT)
        else:
            self.engine = AuthoritativeEngine(s)
            self.engine.load(self.store.load_leases())
            gc.freeze()  # the loaded leases live long: keep them out of every collection
            if s.conflict_check:
                self.engine.probe = IcmpProbe(s.interface)
            ports = (SERVER_PORT,)
        self.engine.set_hosts(self.store.hosts_by_mac())
        self._socks = [open_socket(s.interface, p) for p in ports]
        log.info("dhcp serving", extra={"mode": s.mode, "interface": s.interface,
                                        "ports": ",".join(map(str, ports))})
        self._committer = Committer(self.store, self._send)
        self._started.set()
        try:
            self._loop(stop)
        finally:
            self._committer.close()  # commit and answer what is in flight
            for sk in self._socks:
                sk.close()
            self._socks = []

    def _take_settings(self) -> None:
        """In the loop's thread, between batches: no packet sees half of a change."""
        new, self._pending_settings = self._pending_settings, None
        self.settings = new
        self.engine.reconfigure(new)
        log.info("dhcp settings applied", extra={"range": f"{new.range_first}-{new.range_last}",
                                                 "lease_seconds": new.lease_seconds})

    def _send(self, sock: socket.socket, r: Reply) -> None:
        try:
            if r.arp_mac is not None:
                try:
                    set_arp(sock, r.ip, r.arp_mac, self.settings.interface)
                except OSError:
                    r.ip = "255.255.255.255"  # no neighbour entry: broadcast instead
            sock.sendto(r.payload, (r.ip, r.port))
        except OSError as e:
            self.engine.counters.dropped["send_error"] += 1
            log.debug("send failed", extra={"to": r.ip, "error": str(e)})

    def _loop(self, stop: threading.Event) -> None:
        engine = self.engine
        store = self.store
        poller = select.poll()
        by_fd = {}
        for sk in self._socks:
            poller.register(sk.fileno(), select.POLLIN)
            by_fd[sk.fileno()] = sk
        ports = {sk.fileno(): sk.getsockname()[1] for sk in self._socks}
        proxy = isinstance(engine, ProxyEngine)
        next_refresh = self.clock() + self.hosts_refresh
        dontwait = socket.MSG_DONTWAIT
        while not stop.is_set():
            events = poller.poll(500)
            now = self.clock()
            if self._pending_settings is not None:
                self._take_settings()
            if now >= next_refresh:
                next_refresh = now + self.hosts_refresh
                try:
                    engine.set_hosts(store.hosts_by_mac())
                except Exception:  # noqa: BLE001 - a busy DB must not stop DHCP
                    log.warning("could not reload hosts", exc_info=True)
            if not events:
                continue
            held: list[tuple[socket.socket, Reply]] = []
            for fd, _ in events:
                sock = by_fd[fd]
                port = ports[fd]
                recv = sock.recvfrom
                for _ in range(MAX_BATCH):
                    try:
                        data, src = recv(2048, dontwait)
                    except BlockingIOError:
                        break
                    except OSError:
                        engine.counters.dropped["recv_error"] += 1
                        break
                    if proxy:
                        replies = engine.handle(data, now, port=port, src=src)
                    else:
                        replies = engine.handle(data, now)
                    for r in replies:
                        if r.durable:
                            held.append((sock, r))
                        else:
                            self._send(sock, r)
            self.batches += 1
            if proxy:
                if engine.pending_events:
                    evs, engine.pending_events = engine.pending_events, []
                    self._committer.submit([], evs, [])
                continue
            if engine.dirty or engine.pending_events or held:
                rows, evs = engine.take_dirty(now)
                if self.inline_commit:
                    # raises: no ACK leaves; the supervisor restarts us
                    not_durable = store.commit(rows, evs)
                    self.inline_commits += 1
                    self.inline_not_durable += send_durable(self._send, held, not_durable)
                else:
                    # raises if an earlier commit failed: the supervisor restarts us from the DB
                    self._committer.submit(rows, evs, held)
