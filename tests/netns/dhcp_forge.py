"""A hostile DHCP client for the netns tests: `python -m tests.netns.dhcp_forge IFACE SERVER
FIRST LAST` (run inside the client namespace) sends, from made-up MACs:

- a DECLINE for every address of FIRST..LAST (none was offered to its sender);
- an INIT-REBOOT REQUEST for every address (a client the server has no record of);
- a RENEW (ciaddr set) for every address, from yet other MACs;
- from one MAC, six rounds of DISCOVER then DECLINE of the address it was offered.

It prints one JSON line: how many packets it sent and which replies it saw (message
type and address), so the test can check that the forged requests got none.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time

from netservices.dhcp import codec
from tests.dhcp_helpers import client_packet

BROADCAST_FLAG = 0x8000


def forged_mac(kind: int, i: int) -> str:
    return f"02:66:{kind:02x}:00:{i >> 8 & 255:02x}:{i & 255:02x}"


def open_socket(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("0.0.0.0", 68))
    s.settimeout(0.3)
    return s


def replies(s: socket.socket, seconds: float) -> list[codec.Packet]:
    out, until = [], time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            data, _ = s.recvfrom(4096)
        except TimeoutError:
            continue
        try:
            out.append(codec.parse(data))
        except codec.MalformedPacket:
            pass
    return out


def main(iface: str, server: str, first: str, last: str) -> dict:
    s = open_socket(iface)
    dest = ("255.255.255.255", 67)
    sid = codec.ip_bytes(server)
    a, b = int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))
    sent, seen = 0, []
    for n, v in enumerate(range(a, b + 1)):
        ip = str(ipaddress.IPv4Address(v))
        for pkt in (
            client_packet(codec.DECLINE, forged_mac(1, n), 100 + n, opt50=codec.ip_bytes(ip),
                          opt54=sid),
            client_packet(codec.REQUEST, forged_mac(2, n), 200 + n, flags=BROADCAST_FLAG,
                          opt50=codec.ip_bytes(ip), opt12=b"forged"),
            client_packet(codec.REQUEST, forged_mac(3, n), 300 + n, flags=BROADCAST_FLAG,
                          ciaddr=ip),
        ):
            s.sendto(pkt, dest)
            sent += 1
    seen += [(codec.MESSAGE_TYPE_NAMES.get(p.message_type, "?"), codec.ip_str(p.yiaddr))
             for p in replies(s, 1.0) if p.op == codec.BOOTREPLY]
    # one client declining whatever it is offered
    declined = []
    mac = forged_mac(4, 0)
    for k in range(6):
        s.sendto(client_packet(codec.DISCOVER, mac, 400 + k, flags=BROADCAST_FLAG), dest)
        sent += 1
        offers = [p for p in replies(s, 0.5) if p.xid == 400 + k
                  and p.message_type == codec.OFFER]
        if offers:
            s.sendto(client_packet(codec.DECLINE, mac, 400 + k, opt50=offers[0].yiaddr,
                                   opt54=sid), dest)
            sent += 1
            declined.append(codec.ip_str(offers[0].yiaddr))
    s.close()
    return {"sent": sent, "replies_to_forged": seen, "decliner_mac": mac,
            "declined": declined}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])), flush=True)
