"""Wake-on-LAN: the magic packet (6 x 0xff, 16 x MAC, optional SecureOn password)."""

from __future__ import annotations

import socket

from appliance.config.macs import mac_to_bytes, normalize_mac
from appliance.domain import events, hosts
from appliance.errors import NixieError


def magic_packet(mac: str, password: str | None = None) -> bytes:
    payload = b"\xff" * 6 + mac_to_bytes(mac) * 16
    if password:
        hexpw = password.replace(":", "").replace("-", "")
        if len(password) > 6 and all(c in "0123456789abcdefABCDEF" for c in hexpw):
            pw = bytes.fromhex(hexpw)  # written like a MAC: 6 bytes
        else:
            pw = password.encode()
        if len(pw) not in (4, 6):
            raise ValueError("SecureOn password must be 4 or 6 bytes")
        payload += pw
    return payload


def send_magic_packet(mac: str, *, interface: str | None = None, broadcast: str = "255.255.255.255",
                      port: int = 9, password: str | None = None) -> bytes:
    """Broadcast the packet (on `interface` when given). Returns the payload sent."""
    normalize_mac(mac)
    payload = magic_packet(mac, password)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        s.sendto(payload, (broadcast, port))
    return payload


def wake_host(conn, name: str, *, interface: str | None,
              broadcast: str = "255.255.255.255") -> list[str]:
    """Send the magic packet to every MAC of host `name` on `interface`, each an event.
    Raises NotFound for an unknown host, WakeFailed when the kernel refuses to send."""
    h = hosts.get_host(conn, name)
    for mac in h["macs"]:
        try:
            send_magic_packet(mac, interface=interface, broadcast=broadcast)
        except OSError as e:
            events.record(conn, "host.wol_failed",
                          f"Wake-on-LAN to {mac} on {interface or 'default route'} failed: {e.strerror}",
                          level="error", host_id=h["id"], mac=mac)
            raise WakeFailed(f"Wake-on-LAN on {interface or 'the default route'} failed: "
                             f"{e.strerror}") from None
        events.record(conn, "host.wol", f"Wake-on-LAN sent to {mac} on {interface or 'default route'}",
                      host_id=h["id"], mac=mac)
    return h["macs"]


class WakeFailed(NixieError):
    http_status = 502
