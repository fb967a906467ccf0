"""Helpers shared by the DHCP tests: pcap reading and client packets."""

from __future__ import annotations

import struct
from pathlib import Path

from netservices.dhcp import codec

DATA = Path(__file__).resolve().parent / "data" / "dhcp"


def pcap_udp_payloads(path: Path) -> list[tuple[int, int, bytes]]:
    """(source port, destination port, UDP payload) of every IPv4/UDP frame in a
    classic pcap file with Ethernet link type."""
    raw = path.read_bytes()
    magic = raw[:4]
    endian = "<" if magic == b"\xd4\xc3\xb2\xa1" else ">"
    (linktype,) = struct.unpack(endian + "I", raw[20:24])
    assert linktype == 1, f"{path}: link type {linktype} is not Ethernet"
    out, i = [], 24
    while i + 16 <= len(raw):
        _, _, incl, _ = struct.unpack(endian + "IIII", raw[i : i + 16])
        frame = raw[i + 16 : i + 16 + incl]
        i += 16 + incl
        if frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 15) * 4
        udp = frame[14 + ihl :]
        sport, dport, length = struct.unpack("!HHH", udp[:6])
        out.append((sport, dport, udp[8:length]))
    return out


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def client_packet(mt: int, mac: str, xid: int = 1, *, ciaddr: str = "0.0.0.0",
                  giaddr: str = "0.0.0.0", flags: int = 0, **options: bytes) -> bytes:
    """A BOOTREQUEST from `mac`; options given as opt<code>=bytes."""
    opts = {codec.OPT_MESSAGE_TYPE: bytes([mt])}
    for k, v in options.items():
        opts[int(k.removeprefix("opt"))] = v
    p = codec.Packet(op=codec.BOOTREQUEST, xid=xid, flags=flags, ciaddr=codec.ip_bytes(ciaddr),
                     giaddr=codec.ip_bytes(giaddr), chaddr=mac_bytes(mac).ljust(16, b"\0"),
                     options=opts)
    return codec.build(p)
