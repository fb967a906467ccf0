"""Listen addresses as the config writes them: `host:port`, `[v6]:port`."""

from __future__ import annotations

import socket


def parse_listen(addr: str) -> tuple[int, str, int]:
    """(address family, host, port) of a `host:port` or `[v6]:port` listen address."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), host, int(port)
