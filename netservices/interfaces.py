"""Waiting for a network interface: the IPv6 LAN services start with `nixie serve`,
and the LAN interface (a bridge the network settings create, a veth a test adds)
may come a little later. They wait for it rather than fail and back off."""

from __future__ import annotations

import logging
import socket
import threading


def wait_for_interface(name: str, stop: threading.Event, log: logging.Logger,
                       poll: float = 1.0) -> bool:
    """True once `name` exists; False if `stop` was set first."""
    said = False
    while not stop.is_set():
        try:
            socket.if_nametoindex(name)
            return True
        except OSError:
            if not said:
                log.warning("waiting for the interface", extra={"interface": name})
                said = True
        stop.wait(poll)
    return False
