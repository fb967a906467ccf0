"""The router advertisement service: one raw ICMPv6 socket on the LAN interface.

It joins ff02::2 (all routers) to hear router solicitations (only type 133 passes
the socket's ICMPv6 filter), sends with hop limit 255 from the interface's
link-local address, multicasts the periodic RAs to ff02::1, and at shutdown
multicasts the advertisement with router lifetime 0 (RFC 4861 6.2.5).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from netservices.interfaces import wait_for_interface

from .engine import (
    ALL_NODES,
    ALL_ROUTERS,
    Advertiser,
    RaSettings,
    needs_restart,
)

log = logging.getLogger("nixie.ra")

ICMP6_FILTER = 1
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)


def interface_mac(interface: str) -> bytes | None:
    try:
        text = open(f"/sys/class/net/{interface}/address").read().strip()
    except OSError:
        return None
    b = bytes.fromhex(text.replace(":", ""))
    return b if len(b) == 6 else None


def open_icmp6(interface: str, *, join: str | None, pass_types: tuple[int, ...]) -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        ifindex = socket.if_nametoindex(interface)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        blocked = [0xFFFFFFFF] * 8
        for t in pass_types:
            blocked[t >> 5] &= ~(1 << (t & 31))
        s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        if join:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                         socket.inet_pton(socket.AF_INET6, join) + struct.pack("@I", ifindex))
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"router advertisements on {interface}: {e.strerror}") from None
    return s


IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08


def link_local(interface: str) -> str | None:
    """The interface's usable link-local address (DAD done), from /proc/net/if_inet6."""
    try:
        lines = open("/proc/net/if_inet6").read().splitlines()
    except OSError:
        return None
    for ln in lines:
        f = ln.split()
        if len(f) == 6 and f[5] == interface and int(f[3], 16) == 0x20 \
                and not int(f[4], 16) & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(f[0]))
    return None


def wait_link_local(interface: str, stop: threading.Event, timeout: float = 10.0) -> str | None:
    """RAs must come from a link-local address (RFC 4861 6.1.2: hosts drop others);
    a new interface has one once duplicate address detection is done."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        ll = link_local(interface)
        if ll:
            return ll
        stop.wait(0.1)
    return None


def hop_limit_of(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT and len(data) >= 4:
            return struct.unpack("@i", data[:4])[0]
    return None


class RaService:
    """Periodic and solicited router advertisements on the LAN (a supervised service)."""

    name = "ra"

    def __init__(self, settings: RaSettings, *, prepare: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.prepare = prepare  # e.g. put the router's address in the prefix on the LAN
        self.clock = clock
        self.advertiser: Advertiser | None = None
        self._pending: RaSettings | None = None
        self._started = threading.Event()

    @property
    def ready(self) -> threading.Event:
        return self._started

    def stats(self) -> dict[str, Any]:
        return self.advertiser.stats() if self.advertiser else {}

    def shutdown(self) -> None:
        pass  # the loop wakes at least every 0.5 s and sees the stop event

    def reconfigure(self, settings: RaSettings) -> bool:
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
        if s.source_mac is None:
            s = self.settings = replace(s, source_mac=interface_mac(s.interface))
        ifindex = socket.if_nametoindex(s.interface)
        ll = wait_link_local(s.interface, stop)
        if ll is None:
            if stop.is_set():
                return
            raise OSError(f"no link-local IPv6 address on {s.interface}: RAs need one")
        sock = open_icmp6(s.interface, join=ALL_ROUTERS, pass_types=(133,))
        try:
            sock.bind((ll, 0, 0, ifindex))  # the source of every RA
        except OSError:
            sock.close()
            raise
        self.advertiser = adv = Advertiser(s, now=self.clock())
        log.info("router advertisements", extra={"interface": s.interface, "prefix": s.prefix,
                                                  "managed": s.managed, "other": s.other})
        self._started.set()
        try:
            self._loop(stop, sock, adv, ifindex)
        finally:
            # RFC 4861 6.2.5: router lifetime 0, so hosts stop using us at once (one
            # RA rather than MAX_FINAL_RTR_ADVERTISEMENTS: a stop must take < 2 s)
            self._send(sock, adv.goodbye, ALL_NODES, ifindex)
            adv.counters["sent"]["ra_final"] += 1
            sock.close()

    def _send(self, sock: socket.socket, payload: bytes, dst: str, ifindex: int) -> None:
        try:
            sock.sendto(payload, (dst, 0, 0, ifindex))
        except OSError as e:
            if self.advertiser:
                self.advertiser.counters["dropped"]["send_error"] += 1
            log.debug("RA send failed", extra={"to": dst, "error": str(e)})

    def _loop(self, stop: threading.Event, sock: socket.socket, adv: Advertiser,
              ifindex: int) -> None:
        while not stop.is_set():
            now = self.clock()
            if self._pending is not None:
                new, self._pending = self._pending, None
                if new.source_mac is None:
                    new = replace(new, source_mac=self.settings.source_mac)
                self.settings = new
                adv.reconfigure(new, now)
            if adv.due(now):
                self._send(sock, adv.payload, ALL_NODES, ifindex)
                adv.sent_multicast(now)
            wait = max(0.0, min(0.5, adv.next_at - self.clock()))
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                continue
            for _ in range(64):
                try:
                    data, anc, _flags, src = sock.recvmsg(1500, 64, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError:
                    adv.counters["dropped"]["recv_error"] += 1
                    break
                dst = adv.on_solicit(data, src[0].split("%")[0], hop_limit_of(anc), self.clock())
                if dst is not None:
                    self._send(sock, adv.payload, dst, ifindex)
