"""A hostile TFTP client for the netns tests: `python -m tests.netns.tftp_forge SERVER
COUNT ADDR...` (run in the client namespace) sends COUNT read requests from each
ADDR, asking `timeout=255` (half of them also blksize, so they start with an OACK),
and never answers. It prints "sent" once every request is out, keeps listening until
nothing came for 3 s, and prints one JSON line: what came back, per server TID."""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import time


def rrq(name: str, **opts: str) -> bytes:
    out = struct.pack("!H", 1) + name.encode() + b"\0octet\0"
    for k, v in opts.items():
        out += k.encode() + b"\0" + v.encode() + b"\0"
    return out


def main(server: str, count: int, addrs: list[str]) -> dict:
    socks = []
    sel = selectors.DefaultSelector()
    sent_bytes = 0
    for addr in addrs:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, 0))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, addr)
        socks.append(s)
    for i in range(count):
        for s in socks:
            req = rrq("ipxe.efi", timeout="255", **({"blksize": "1468"} if i % 2 else {}))
            s.sendto(req, (server, 69))
            sent_bytes += len(req)
    print("sent", flush=True)
    tids: dict[str, dict] = {}
    last = time.monotonic()
    while time.monotonic() - last < 3.0:
        for key, _ in sel.select(0.2):
            while True:
                try:
                    data, peer = key.fileobj.recvfrom(70000)
                except BlockingIOError:
                    break
                last = time.monotonic()
                t = tids.setdefault(f"{key.data}>{peer[1]}", {"packets": 0, "bytes": 0,
                                                             "opcodes": [], "oack": None})
                t["packets"] += 1
                t["bytes"] += len(data)
                t["opcodes"].append(struct.unpack("!H", data[:2])[0])
                if data[:2] == b"\x00\x06":
                    t["oack"] = data[2:].decode("ascii", "replace")
    for s in socks:
        s.close()
    return {"requests": count * len(addrs), "sent_bytes": sent_bytes, "tids": tids}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])), flush=True)
