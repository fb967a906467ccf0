"""The DHCPv6 service: a UDP socket on port 547 and the group commit around an engine.

One thread and one socket bound to the LAN interface, joined to ff02::1:2 (all
DHCP relay agents and servers). As for DHCPv4, the loop reads every datagram
waiting, sends what need not wait (ADVERTISE, information replies) at once,
holds the REPLYs that bind, and hands the batch's binding changes and events to
the committer (`netservices.dhcp.server.Committer`), which commits them in one
durable transaction and only then sends the held REPLYs.
"""

from __future__ import annotations

import gc
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from netservices.dhcp.server import Committer
from netservices.interfaces import wait_for_interface

from .engine import (
    ALL_SERVERS_AND_RELAYS,
    SERVER_PORT,
    Dhcp6Engine,
    Dhcp6Settings,
    Reply6,
    needs_restart,
)
from .store import Lease6Store

log = logging.getLogger("nixie.dhcp6")

MAX_BATCH = 512
HOSTS_REFRESH_SECONDS = 5.0


def open_socket6(interface: str, port: int = SERVER_PORT,
                 group: str | None = ALL_SERVERS_AND_RELAYS) -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        ifindex = socket.if_nametoindex(interface)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        for opt in (33, socket.SO_RCVBUF):  # 33: SO_RCVBUFFORCE (root), else capped
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                break
            except OSError:
                continue
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.bind(("::", port))
        if group:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                         socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex))
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"DHCPv6 on {interface} port {port}: {e.strerror}") from None
    return s


class Dhcp6Service:
    """Stateful or stateless DHCPv6 on the LAN interface (a supervised service)."""

    name = "dhcp6"

    def __init__(self, settings: Dhcp6Settings, store: Lease6Store, *, clock=time.time,
                 prepare: Callable[[], None] | None = None,
                 hosts_refresh: float = HOSTS_REFRESH_SECONDS):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.prepare = prepare
        self.hosts_refresh = hosts_refresh
        self.engine: Dhcp6Engine | None = None
        self._sock: socket.socket | None = None
        self._ifindex = 0
        self._started = threading.Event()
        self._committer: Committer | None = None
        self._pending: Dhcp6Settings | None = None
        self.batches = 0

    @property
    def ready(self) -> threading.Event:
        return self._started

    def stats(self) -> dict[str, Any]:
        e = self.engine
        if e is None:
            return {}
        c = self._committer
        return {**e.stats(self.clock()), "batches": self.batches, "commits": c.commits if c else 0}

    def shutdown(self) -> None:
        pass  # the loop polls with a timeout and sees the stop event

    def reconfigure(self, settings: Dhcp6Settings) -> bool:
        """Take new settings live (range, lifetimes, options, boot policy), or False
        when the change needs a new service (`needs_restart`)."""
        if needs_restart(self.settings, settings):
            return False
        self._pending = settings
        return True

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        if not wait_for_interface(s.interface, stop, log):
            return
        if self.prepare is not None:
            self.prepare()
        self.engine = Dhcp6Engine(s)
        self.engine.load(self.store.load_leases6())
        gc.freeze()
        self.engine.set_hosts(self.store.hosts6_by_mac())
        self._ifindex = socket.if_nametoindex(s.interface)
        self._sock = open_socket6(s.interface)
        log.info("dhcp6 serving", extra={"mode": s.mode, "interface": s.interface,
                                         "prefix": s.prefix})
        self._committer = Committer(self.store, self._send)
        self._started.set()
        try:
            self._loop(stop)
        finally:
            self._committer.close()
            self._sock.close()

    def _send(self, sock: socket.socket, r: Reply6) -> None:
        try:
            sock.sendto(r.payload, (r.ip, r.port, 0, self._ifindex))
        except OSError as e:
            self.engine.counters.dropped["send_error"] += 1
            log.debug("send failed", extra={"to": r.ip, "error": str(e)})

    def _loop(self, stop: threading.Event) -> None:
        engine = self.engine
        sock = self._sock
        store = self.store
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        next_refresh = self.clock() + self.hosts_refresh
        dontwait = socket.MSG_DONTWAIT
        recv = sock.recvfrom
        while not stop.is_set():
            events = poller.poll(500)
            now = self.clock()
            if self._pending is not None:
                new, self._pending = self._pending, None
                self.settings = new
                engine.reconfigure(new)
                log.info("dhcp6 settings applied", extra={"range": f"{new.range_first}-"
                                                                   f"{new.range_last}"})
            if now >= next_refresh:
                next_refresh = now + self.hosts_refresh
                try:
                    engine.set_hosts(store.hosts6_by_mac())
                except Exception:  # noqa: BLE001 - a busy DB must not stop DHCPv6
                    log.warning("could not reload hosts", exc_info=True)
            if not events:
                continue
            held: list[tuple[socket.socket, Reply6]] = []
            for _ in range(MAX_BATCH):
                try:
                    data, src = recv(2048, dontwait)
                except BlockingIOError:
                    break
                except OSError:
                    engine.counters.dropped["recv_error"] += 1
                    break
                for r in engine.handle(data, src[0].split("%")[0], now):
                    if r.durable:
                        held.append((sock, r))
                    else:
                        self._send(sock, r)
            self.batches += 1
            if engine.dirty or engine.pending_events or held:
                rows, evs = engine.take_dirty(now)
                # raises if an earlier commit failed: the supervisor restarts us from the DB
                self._committer.submit(rows, evs, held)
