"""Run the TFTP server alone: `python -m netservices.tftp --root DIR --listen IP:PORT`.

Used by the tests and the benchmark (in a namespace). On SIGTERM it prints its
counters as one JSON line on stdout and exits 0."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from . import populate_root
from .server import TftpServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netservices.tftp")
    ap.add_argument("--root", required=True)
    ap.add_argument("--listen", action="append", required=True)
    ap.add_argument("--ipxe-dir", help="copy the iPXE binaries from here into the root first")
    args = ap.parse_args(argv)
    if args.ipxe_dir:
        populate_root(args.root, args.ipxe_dir)
    server = TftpServer(args.root, args.listen)
    server.bind()
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    signal.signal(signal.SIGINT, lambda *_: server.shutdown())
    print("ready", flush=True)
    server.serve()
    print(json.dumps(server.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
