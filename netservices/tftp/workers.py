"""TFTP on several cores: worker processes sharing the listen addresses.

A Python loop costs ~25 us of CPU per DATA packet, so one loop is bound to one
core. `WorkerPool` is the shared pool of `netservices/workerpool.py` (binding
in the parent, fresh interpreters inheriting the sockets, settings on stdin,
restarts with a growing pause, SIGTERM then SIGKILL, counters summed with a dead
worker's last snapshot kept) running `python -m netservices.tftp.worker`. Every
worker waits on the listen sockets and takes one request per wake-up, so
whichever worker is free takes the next client, and serves that whole transfer
on its own connected socket. A worker that dies loses nothing queued on the
listen sockets: its siblings read on.

What is TFTP's own here: the workers' boot events, to which the parent adds the
host via `host_by_ip` (the only thing TFTP asks the backend), and the counters
`stats()` reports (`active` is a gauge: it ends with its worker).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from .. import workerpool
from ..backend import HostDirectory
from ..listen import parse_listen, usable_cpus
from ..workerpool import Worker, WorkerFailed
from .server import bind_listeners

__all__ = ["WorkerFailed", "WorkerPool", "resolve_workers"]

log = logging.getLogger("nixie.tftp")

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the dir holding netservices/
BIND_RETRY_SECONDS = 3.0  # a taken address is tried again this long (other timings: the pool's)
GAUGES = frozenset({"active"})  # a dead worker's last `active` is not carried


def resolve_workers(workers: int) -> int:
    """0 means one per two CPUs this process may run on (at least one): TFTP only
    carries the iPXE binaries, and a worker per CPU costs more CPU per packet
    (context switches) than it wins whenever the cores are busy with anything else."""
    return workers if workers > 0 else max(1, usable_cpus() // 2)


class WorkerPool(workerpool.WorkerPool):
    """N worker processes serving `root` on `listen`, supervised by `run(stop)`."""

    def __init__(self, root: str, listen: list[str], workers: int, events=None,
                 hosts: HostDirectory | None = None,
                 python: str = sys.executable, busy_poll_us: int = 0):
        self.root = str(root)
        self.listen = list(listen)
        self.events = events
        self.hosts = hosts
        super().__init__(
            "tftp worker", workers, [python, "-m", "netservices.tftp.worker"],
            bind=lambda: [s for s, _ in bind_listeners(self.listen)],
            settings={"root": self.root, "busy_poll_us": busy_poll_us,
                      "hosts": [parse_listen(a)[1] for a in self.listen]},
            log=log, on_message=self._on_message, gauges=GAUGES, pythonpath=PACKAGE_PARENT,
            about={"root": self.root, "listen": ",".join(self.listen)},
            bind_retry_seconds=BIND_RETRY_SECONDS)

    def _on_message(self, w: Worker, msg: dict) -> None:
        if "event" in msg:
            self._forward_event(msg["event"])

    def _forward_event(self, ev: dict) -> None:
        if self.events is None:
            return
        ip = ev.get("ip")
        try:
            host = self.hosts.host_by_ip(ip) if self.hosts is not None and ip else None
            self.events.event(ev.get("kind", "boot.tftp"), ev.get("message", ""),
                              level=ev.get("level", "info"), ip=ip, data=ev.get("data"),
                              host_id=host.id if host else None,
                              mac=host.macs[0] if host and host.macs else None)
        except Exception:  # noqa: BLE001 - a failing event sink must not stop TFTP
            log.warning("could not record a TFTP event", exc_info=True)

    def stats(self) -> dict[str, Any]:
        """The workers' counters summed (dead workers' included), plus the pool's own."""
        total: dict[str, Any] = dict(self.totals())
        total["workers"] = self.alive()
        total["worker_restarts"] = self.restarts
        total.setdefault("active", 0)
        return total
