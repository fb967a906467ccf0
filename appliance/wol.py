"""Wake-on-LAN: the magic packet (6 x 0xff, 16 x MAC, optional SecureOn password)."""

from __future__ import annotations

import socket

from .macs import mac_to_bytes, normalize_mac


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
