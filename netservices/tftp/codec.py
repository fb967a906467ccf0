"""TFTP packets (RFC 1350, options RFC 2347-2349, windowsize RFC 7440): bytes in, objects out.

Request packets (RRQ/WRQ) are parsed by tftpy's packet factory; this module
only wraps it so every malformed input becomes one `MalformedPacket`. The hot
path (DATA out, ACK in) is four bytes of struct each, done here directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketOACK, TftpPacketRRQ, TftpPacketWRQ

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 2, 3, 4, 5, 6

# error codes
ERR_UNDEFINED = 0
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_ILLEGAL = 4
ERR_UNKNOWN_TID = 5
ERR_OPTIONS = 8

_factory = TftpPacketFactory()
_HDR = struct.Struct("!HH")


class MalformedPacket(ValueError):
    """Bytes that are not a TFTP packet we understand."""


@dataclass(frozen=True)
class Request:
    write: bool
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)


def parse_request(data: bytes) -> Request:
    """An RRQ or WRQ. Raises MalformedPacket for anything else or anything broken."""
    if len(data) < 4:
        raise MalformedPacket("too short for a request")
    opcode = _HDR.unpack_from(data)[0]
    if opcode not in (OP_RRQ, OP_WRQ):
        raise MalformedPacket(f"opcode {opcode} is not a request")
    if data[-1:] != b"\0":
        raise MalformedPacket("request does not end with NUL")
    try:
        pkt = _factory.parse(bytes(data))
    except Exception as e:  # tftpy raises TftpException, struct.error, UnicodeDecodeError...
        raise MalformedPacket(f"bad request: {e}") from None
    if not isinstance(pkt, TftpPacketRRQ | TftpPacketWRQ):
        raise MalformedPacket("not a request")
    if not pkt.filename:
        raise MalformedPacket("empty file name")
    options = {str(k).lower(): str(v) for k, v in pkt.options.items()}
    return Request(write=isinstance(pkt, TftpPacketWRQ), filename=pkt.filename,
                   mode=pkt.mode, options=options)


def parse_ack(data: bytes) -> int | None:
    """The block number of an ACK, None for an ERROR (the client aborts).
    Raises MalformedPacket otherwise."""
    if len(data) < 4:
        raise MalformedPacket("too short")
    opcode, block = _HDR.unpack_from(data)
    if opcode == OP_ACK:
        return block
    if opcode == OP_ERROR:
        return None
    raise MalformedPacket(f"unexpected opcode {opcode} during a transfer")


def data_header(block: int) -> bytes:
    return _HDR.pack(OP_DATA, block & 0xFFFF)


def encode_data(block: int, payload: bytes) -> bytes:
    return data_header(block) + payload


def encode_oack(options: dict[str, str]) -> bytes:
    pkt = TftpPacketOACK()
    pkt.options = options
    return pkt.encode().buffer


def encode_error(code: int, message: str) -> bytes:
    msg = message.encode("ascii", "replace")[:200]
    return _HDR.pack(OP_ERROR, code) + msg + b"\0"


def decode_error(data: bytes) -> tuple[int, str]:
    if len(data) < 4:
        raise MalformedPacket("too short")
    opcode, code = _HDR.unpack_from(data)
    if opcode != OP_ERROR:
        raise MalformedPacket("not an error")
    return code, data[4:].split(b"\0", 1)[0].decode("ascii", "replace")


def decode_oack(data: bytes) -> dict[str, str]:
    if len(data) < 2 or _HDR.unpack_from(data + b"\0\0")[0] != OP_OACK:
        raise MalformedPacket("not an OACK")
    parts = data[2:].split(b"\0")
    if parts and parts[-1] == b"":
        parts = parts[:-1]
    if len(parts) % 2:
        raise MalformedPacket("odd number of option fields")
    return {parts[i].decode().lower(): parts[i + 1].decode() for i in range(0, len(parts), 2)}
