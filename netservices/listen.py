"""Listen addresses as the config writes them (`host:port`, `[v6]:port`), and
what a pool of worker processes sharing bound listeners needs (binding with a
retry, usable CPUs); the pool itself is `netservices/workerpool.py`, used by the
TFTP workers and the web UI's (appliance/runtime/webserver.py)."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def parse_listen(addr: str) -> tuple[int, str, int]:
    """(address family, host, port) of a `host:port` or `[v6]:port` listen address."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), host, int(port)


def client_group(addr: str) -> str:
    """The group of addresses one client counts as, for per-client limits (HTTP
    connections, failed logins; not DHCP's `pool.client_key`, a lease's client): its
    IPv4 address (also when it comes as an IPv4-mapped IPv6 address), or its IPv6 /64.
    One IPv6 host may use any address of its /64 (privacy addresses, or simply more of
    them), so a limit per IPv6 address would be a limit per connection. Anything not
    an address is itself."""
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return addr
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bind_retrying(bind: Callable[[], T], stop: threading.Event | None, seconds: float) -> T:
    """`bind()`, tried again for `seconds` while its address is in use: the workers
    of a server that was just killed hold the port until they notice (they end at
    once then). Any other error, or `stop`, raises."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return bind()
        except OSError as e:
            if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            if stop.wait(0.1) if stop is not None else time.sleep(0.1):
                raise
