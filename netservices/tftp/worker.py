"""One TFTP worker process: `python -m netservices.tftp.worker`.

Started by `WorkerPool` (workers.py), never by hand: its settings (`root`,
`busy_poll_us`, the inherited listen descriptors `fds` and their `hosts`) come
as one JSON line on stdin (netservices/workerpool.py). It waits on the listen
sockets with its siblings, takes one request per wake-up, and serves the
transfers it took with the ordinary loop.

Everything the parent needs comes back on stdout, one JSON object per line:
  {"ready": pid}                      when it serves
  {"event": {...}}                    a boot event (the parent adds the host)
  {"stats": {...}}                    counters, about once a second and at exit
  {"log": {"level": .., "msg": .., "extra": {..}}}  a log record
It stops on SIGTERM, when its stdin reaches EOF (the parent is gone: the pipe's
write end closes even on SIGKILL), and on the parent's death (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

from ..workerpool import Reports, join_pool, on_parent_gone
from .server import TftpServer

STATS_INTERVAL = 1.0


class PipeEvents:
    """The EventSink of a worker: every event goes to the parent."""

    def __init__(self, out: Reports):
        self.out = out
        self.pid = os.getpid()

    def event(self, kind, message="", *, level="info", host_id=None, mac=None, ip=None,
              data=None) -> None:
        data = {**(data or {}), "worker": self.pid}
        self.out.send({"event": {"kind": kind, "message": message, "level": level, "ip": ip,
                                 "data": data}})


def main() -> int:
    settings = join_pool()
    out = Reports()
    logger = logging.getLogger("nixie")
    logger.addHandler(out.log_handler())
    logger.setLevel(logging.INFO)
    logger.propagate = False

    listeners = []
    for fd, host in zip(settings["fds"], settings["hosts"], strict=True):
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        listeners.append((sock, host))
    server = TftpServer(settings["root"], [], events=PipeEvents(out),
                        listen_sockets=listeners, requests_per_wake=1,
                        busy_poll_us=settings["busy_poll_us"])
    server.bind()
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    on_parent_gone(server.shutdown)
    done = threading.Event()
    out.stats_every(STATS_INTERVAL, server.stats, done)
    out.ready()
    try:
        server.serve()
    finally:
        done.set()
        out.stats(server.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
