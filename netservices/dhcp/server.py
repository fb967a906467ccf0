"""The DHCP service: sockets and the group commit around an engine.

One thread, one UDP socket per port, bound to the LAN interface
(SO_BINDTODEVICE). The loop reads every datagram waiting (up to MAX_BATCH),
sends OFFERs and NAKs at once, holds ACKs, then commits the batch's lease
changes and events in one durable transaction and only then sends the held
ACKs: every lease is on disk before its ACK leaves, and the commit cost is
shared by the batch.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from typing import Any

from .engine import PXE_PORT, SERVER_PORT, AuthoritativeEngine, DhcpSettings, ProxyEngine, Reply
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


class DhcpService:
    """Authoritative or proxy DHCP on the LAN interface (a supervised service)."""

    name = "dhcp"

    def __init__(self, settings: DhcpSettings, store: LeaseStore, *, clock=time.time,
                 hosts_refresh: float = HOSTS_REFRESH_SECONDS):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.hosts_refresh = hosts_refresh
        self.engine: AuthoritativeEngine | ProxyEngine | None = None
        self._socks: list[socket.socket] = []
        self._started = threading.Event()
        self.batches = 0
        self.commits = 0

    @property
    def ready(self) -> threading.Event:
        return self._started

    def stats(self) -> dict[str, Any]:
        e = self.engine
        if e is None:
            return {}
        return {**e.stats(self.clock()), "batches": self.batches, "commits": self.commits}

    def shutdown(self) -> None:
        pass  # the loop polls with a timeout and sees the stop event

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        if s.mode == "proxy":
            self.engine = ProxyEngine(s)
            ports = (SERVER_PORT, PXE_PORT)
        else:
            self.engine = AuthoritativeEngine(s)
            self.engine.load(self.store.load_leases())
            ports = (SERVER_PORT,)
        self.engine.set_hosts(self.store.hosts_by_mac())
        self._socks = [open_socket(s.interface, p) for p in ports]
        log.info("dhcp serving", extra={"mode": s.mode, "interface": s.interface,
                                        "ports": ",".join(map(str, ports))})
        self._started.set()
        try:
            self._loop(stop)
        finally:
            for sk in self._socks:
                sk.close()
            self._socks = []

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
                    store.commit([], evs)
                continue
            if engine.dirty or engine.pending_events:
                rows, evs = engine.take_dirty(now)
                store.commit(rows, evs)  # raises: the ACKs are not sent; supervisor restarts us
                self.commits += 1
            for sock, r in held:
                self._send(sock, r)
