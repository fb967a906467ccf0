"""One TFTP worker process: `python -m netservices.tftp.worker --root DIR --listen IP:PORT ...`.

Started by `WorkerPool` (workers.py), never by hand. It inherits the listen
sockets the parent bound (its siblings wait on the same ones), takes one request
per wake-up, and serves the transfers it took with the ordinary loop.

Everything the parent needs comes back on stdout, one JSON object per line:
  {"ready": pid}                      when it serves
  {"event": {...}}                    a boot event (the parent adds the host)
  {"stats": {...}}                    counters, about once a second and at exit
  {"log": {"level": .., "msg": .., "extra": {..}}}  a log record
It stops on SIGTERM, when its stdin reaches EOF (the parent is gone: the pipe's
write end closes even on SIGKILL), and on the parent's death (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading

from .server import TftpServer

PR_SET_PDEATHSIG = 1
STATS_INTERVAL = 1.0
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class LineWriter:
    """Writes whole JSON lines to a file descriptor, one writer at a time."""

    def __init__(self, fd: int):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj, default=str) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]


class PipeEvents:
    """The EventSink of a worker: every event goes to the parent."""

    def __init__(self, out: LineWriter):
        self.out = out

    def event(self, kind, message="", *, level="info", host_id=None, mac=None, ip=None,
              data=None) -> None:
        data = {**(data or {}), "worker": os.getpid()}
        self.out.send({"event": {"kind": kind, "message": message, "level": level, "ip": ip,
                                 "data": data}})


class PipeLogHandler(logging.Handler):
    """Log records go to the parent, which logs them in its own format."""

    def __init__(self, out: LineWriter):
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
            if record.exc_info:
                extra["exc"] = logging.Formatter().formatException(record.exc_info)
            self.out.send({"log": {"level": record.levelno, "msg": record.getMessage(),
                                   "extra": extra}})
        except Exception:  # noqa: BLE001 - logging must never stop serving
            pass


def die_with_parent(parent: int) -> None:
    """SIGTERM us when the parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the stdin watch still ends us
    if os.getppid() != parent:
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netservices.tftp.worker")
    ap.add_argument("--root", required=True)
    ap.add_argument("--listen-fd", action="append", required=True, metavar="FD@HOST",
                    help="a bound UDP socket inherited from the parent, and its address")
    ap.add_argument("--parent", type=int, required=True, help="the pool's pid")
    ap.add_argument("--busy-poll-us", type=int, default=0,
                    help="poll without sleeping this long while transfers are active")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a terminal ^C stops us
    die_with_parent(args.parent)
    out = LineWriter(sys.stdout.fileno())
    logger = logging.getLogger("nixie")
    logger.addHandler(PipeLogHandler(out))
    logger.setLevel(logging.INFO)
    logger.propagate = False

    listeners = []
    for spec in args.listen_fd:
        fd, _, host = spec.partition("@")
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        listeners.append((sock, host))
    server = TftpServer(args.root, [], events=PipeEvents(out),
                        listen_sockets=listeners, requests_per_wake=1,
                        busy_poll_us=args.busy_poll_us)
    server.bind()
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    done = threading.Event()

    def watch_parent() -> None:
        try:
            while os.read(sys.stdin.fileno(), 64):
                pass
        except OSError:
            pass
        server.shutdown()

    def report_stats() -> None:
        last = None
        while not done.wait(STATS_INTERVAL):
            now = server.stats()
            if now != last:
                out.send({"stats": now})
                last = now

    threading.Thread(target=watch_parent, name="tftp-parent-watch", daemon=True).start()
    threading.Thread(target=report_stats, name="tftp-stats", daemon=True).start()
    out.send({"ready": os.getpid()})
    try:
        server.serve()
    finally:
        done.set()
        out.send({"stats": server.stats()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
