"""Run the TFTP server alone: `python -m netservices.tftp --root DIR --listen IP:PORT`.

Used by the tests and the benchmark (in a namespace). On SIGTERM it prints its
counters as one JSON line on stdout and exits 0."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from . import populate_root
from .server import BUSY_POLL_US, TftpServer
from .workers import WorkerPool, resolve_workers


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
    ap.add_argument("--workers", type=int, default=0,
                    help="worker processes sharing the port; 0 (default): one per two CPUs, as in "
                         "serve; 1 serves in this process")
    ap.add_argument("--busy-poll-us", type=int, default=BUSY_POLL_US,
                    help=f"poll without sleeping this long while transfers are active "
                         f"(default {BUSY_POLL_US}, as in serve; 0: off)")
    args = ap.parse_args(argv)
    if args.ipxe_dir:
        populate_root(args.root, args.ipxe_dir)
    events = JsonLinesEvents(args.events) if args.events else None
    workers = resolve_workers(args.workers)
    server: TftpServer | WorkerPool
    if workers > 1:
        server = WorkerPool(args.root, args.listen, workers, events=events,
                            busy_poll_us=args.busy_poll_us)
    else:
        server = TftpServer(args.root, args.listen, events=events, busy_poll_us=args.busy_poll_us)
        server.bind()
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    signal.signal(signal.SIGINT, lambda *_: server.shutdown())

    def ready() -> None:
        print("ready", flush=True)

    if isinstance(server, WorkerPool):
        server.run(on_ready=ready)
        total = {**server.stats(), "per_worker": server.per_worker()}
    else:
        ready()
        server.serve()
        total = {**server.stats(), "workers": 1}
    print(json.dumps(total), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
