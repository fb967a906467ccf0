"""Run the TFTP server alone: `python -m netservices.tftp --root DIR --listen IP:PORT`.

Used by the tests and the benchmark (in a namespace). On SIGTERM it prints its
counters as one JSON line on stdout and exits 0."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from . import populate_root
from .server import TftpServer


class JsonLinesEvents:
    """An EventSink that appends one JSON object per event to a file."""

    def __init__(self, path: str):
        self.path = path

    def event(self, kind, message="", *, level="info", host_id=None, mac=None, ip=None,
              data=None) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"kind": kind, "message": message, "level": level,
                                "host_id": host_id, "mac": mac, "ip": ip, "data": data}) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netservices.tftp")
    ap.add_argument("--root", required=True)
    ap.add_argument("--listen", action="append", required=True)
    ap.add_argument("--ipxe-dir", help="copy the iPXE binaries from here into the root first")
    ap.add_argument("--events", help="append boot events to this file as JSON lines")
    ap.add_argument("--workers", type=int, default=1, help="loops sharing the port (SO_REUSEPORT)")
    args = ap.parse_args(argv)
    if args.ipxe_dir:
        populate_root(args.root, args.ipxe_dir)
    events = JsonLinesEvents(args.events) if args.events else None
    servers = [TftpServer(args.root, args.listen, events=events, reuse_port=args.workers > 1)
               for _ in range(max(1, args.workers))]
    for server in servers:
        server.bind()

    def stop(*_):
        for server in servers:
            server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=s.serve, daemon=True) for s in servers[1:]]
    for t in threads:
        t.start()
    print("ready", flush=True)
    servers[0].serve()
    for t in threads:
        t.join(timeout=5)
    total: dict[str, int] = {}
    for server in servers:
        for k, v in server.stats().items():
            total[k] = total.get(k, 0) + v
    print(json.dumps(total), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
