"""Hostile DNS parts for the netns tests, run inside namespaces with
`python -m tests.netns.dns_fakes MODE ...`:

- `upstream LOG ADDR FORGER_ADDR`: an upstream on ADDR:53 that logs each query's
  source port and ID (JSON lines in LOG) and, knowing both, first sends forgeries
  (right ID with another question; the right question with 6.6.6.6 from ADDR:5353
  and from FORGER_ADDR:53; another ID), then the real answer, 192.0.2.80;
- `tcp-holder SERVER SECONDS ADDR...`: from each ADDR, keeps as many idle TCP
  connections to SERVER:53 open as it can for SECONDS (reopening each one the server
  closes); prints "holding" once the first round is open, then the number of
  reconnects.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

from dnslib import QTYPE, RR, A, DNSRecord

PER_ADDRESS = 12


def upstream(log: str, addr: str, forger_addr: str) -> None:
    main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    main.bind((addr, 53))
    side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    side.bind((addr, 5353))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind((forger_addr, 53))
    while True:
        data, client = main.recvfrom(4096)
        req = DNSRecord.parse(data)
        with open(log, "a") as f:
            f.write(json.dumps({"port": client[1], "id": req.header.id,
                                "name": str(req.q.qname)}) + "\n")
        wrong = DNSRecord.question("evil.example.org")
        wrong.header.id = req.header.id
        forged_q = wrong.reply()
        forged_q.add_answer(RR("evil.example.org", QTYPE.A, rdata=A("6.6.6.6"), ttl=300))
        forged = req.reply()
        forged.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("6.6.6.6"), ttl=300))
        main.sendto(forged_q.pack(), client)
        side.sendto(forged.pack(), client)
        other.sendto(forged.pack(), client)
        forged.header.id ^= 0x5A5A
        main.sendto(forged.pack(), client)
        real = req.reply()
        real.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.80"), ttl=300))
        main.sendto(real.pack(), client)


def tcp_holder(server: str, seconds: float, addrs: list[str]) -> None:
    def connect(a: str) -> socket.socket | None:
        try:
            return socket.create_connection((server, 53), timeout=2, source_address=(a, 0))
        except OSError:
            return None

    held: dict[socket.socket, str] = {}
    for a in addrs:
        for _ in range(PER_ADDRESS):
            s = connect(a)
            if s is not None:
                held[s] = a
    print("holding", flush=True)
    reconnects, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        readable, _, _ = select.select(list(held), [], [], 0.05)
        for s in readable:
            try:
                gone = s.recv(1) == b""
            except OSError:
                gone = True
            if gone:
                a = held.pop(s)
                s.close()
                new = connect(a)
                reconnects += 1
                if new is not None:
                    held[new] = a
    print(reconnects, flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "upstream":
        upstream(*args)
    else:
        tcp_holder(args[0], float(args[1]), args[2:])
