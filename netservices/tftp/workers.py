"""TFTP on several cores: worker processes sharing the listen addresses.

A Python loop costs ~25 us of CPU per DATA packet, so one loop is bound to one
core. `WorkerPool` binds the listen addresses itself (so a taken address fails
here, at once, and nothing else can join the port) and starts N fresh
interpreters (`python -m netservices.tftp.worker`, never a fork of a threaded
parent) that inherit those sockets. Every worker waits on them and takes one
request per wake-up, so whichever worker is free takes the next client, and
serves that whole transfer on its own connected socket. A worker that dies
loses nothing queued on the listen sockets: its siblings read on.

The parent keeps what needs the appliance: a reader thread per worker turns
the worker's JSON lines into boot events (adding the host via `host_by_ip`),
log records and counter snapshots. A worker that dies is started again (its
last counters are kept, so totals never go back). Workers end on SIGTERM, when
the pipe from the parent closes (even if the parent is SIGKILLed) and by
PR_SET_PDEATHSIG; every worker is started from the thread running `run()`,
because the death signal follows the thread that forked, not the process.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..listen import bind_retrying, usable_cpus
from .server import bind_listeners

log = logging.getLogger("nixie.tftp")

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the dir holding netservices/
READY_TIMEOUT = 15.0
BIND_RETRY_SECONDS = 3.0
STOP_GRACE = 1.0
RESTART_DELAY = (0.2, 5.0)  # first and longest wait before starting a died worker again
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "worker"}
COUNTERS_NOT_SUMMED_OVER_TIME = {"active"}  # a dead worker's last `active` is not carried


class WorkerFailed(OSError):
    """A worker exited before it was serving (e.g. the address is taken)."""


def resolve_workers(workers: int) -> int:
    """0 means one per two CPUs this process may run on (at least one): TFTP only
    carries the iPXE binaries, and a worker per CPU costs more CPU per packet
    (context switches) than it wins whenever the cores are busy with anything else."""
    return workers if workers > 0 else max(1, usable_cpus() // 2)


class Worker:
    """One worker process and what it reported."""

    def __init__(self, slot: int, proc: subprocess.Popen):
        self.slot = slot
        self.proc = proc
        self.pid = proc.pid
        self.ready = threading.Event()
        self.stats: dict[str, Any] = {}
        self.output: list[str] = []  # non-JSON lines (e.g. a traceback), for error reports
        self.reader: threading.Thread | None = None
        self.started = time.monotonic()


class WorkerPool:
    """N worker processes serving `root` on `listen`, supervised by `run(stop)`."""

    def __init__(self, root: str, listen: list[str], workers: int, events=None, hosts=None,
                 python: str = sys.executable, busy_poll_us: int = 0):
        self.root = str(root)
        self.listen = list(listen)
        self.size = workers
        self.events = events
        self._host_by_ip = getattr(hosts, "host_by_ip", None)
        self.python = python
        self.busy_poll_us = busy_poll_us
        self.sockets: list[tuple[socket.socket, str]] = []  # bound here, shared by the workers
        self.workers: dict[int, Worker] = {}  # slot -> the current worker
        self.retired: dict[str, int] = {}  # counters of workers that have exited
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # ------------------------------------------------------------ processes
    def _spawn(self, slot: int) -> Worker:
        argv = [self.python, "-m", "netservices.tftp.worker", "--root", self.root,
                "--parent", str(os.getpid()), "--busy-poll-us", str(self.busy_poll_us)]
        for sock, host in self.sockets:
            argv += ["--listen-fd", f"{sock.fileno()}@{host}"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, close_fds=True,
                                pass_fds=[sock.fileno() for sock, _ in self.sockets])
        w = Worker(slot, proc)
        w.reader = threading.Thread(target=self._read, args=(w,), name=f"tftp-worker-{slot}",
                                    daemon=True)
        w.reader.start()
        return w

    def _wait_ready(self, w: Worker) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not w.ready.wait(0.05):
            if w.proc.poll() is not None or time.monotonic() > deadline:
                if w.reader is not None:
                    w.reader.join(timeout=1)
                self._end(w)
                detail = " | ".join(w.output[-5:]) or f"exit status {w.proc.returncode}"
                raise WorkerFailed(f"TFTP worker did not start: {detail}")

    def _end(self, w: Worker) -> None:
        """Stop one worker (SIGTERM, then SIGKILL after STOP_GRACE) and reap it."""
        if w.proc.poll() is None:
            w.proc.terminate()
            try:
                w.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        if w.proc.stdin:
            w.proc.stdin.close()
        if w.reader is not None:
            w.reader.join(timeout=1)

    def start(self, stop: threading.Event | None = None) -> None:
        """Bind the listen addresses (OSError if one cannot be), start every worker and
        wait until each one serves (WorkerFailed if one does not)."""
        self.sockets = bind_retrying(lambda: bind_listeners(self.listen), stop,
                                     BIND_RETRY_SECONDS)
        started: list[Worker] = []
        try:
            for slot in range(self.size):
                started.append(self._spawn(slot))
            for w in started:
                self._wait_ready(w)
        except BaseException:
            for w in started:
                self._end(w)
            self._close_sockets()
            raise
        with self._lock:
            self.workers = {w.slot: w for w in started}

    def run(self, stop: threading.Event | None = None, on_ready=None) -> None:
        """Start the workers, keep them running until `stop` or `shutdown()`, then stop them.
        `on_ready()` is called once every worker serves."""
        self.start(stop)
        if on_ready is not None:
            on_ready()
        log.info("tftp workers serving", extra={"root": self.root, "listen": ",".join(self.listen),
                                                "workers": self.size,
                                                "pids": ",".join(str(w.pid) for w in self.workers.values())})
        due: dict[int, float] = {}  # slot -> when to start its replacement
        delay: dict[int, float] = {}  # slot -> the last wait (doubles while workers die young)
        try:
            while not self._stopping.wait(0.1) and not (stop is not None and stop.is_set()):
                now = time.monotonic()
                for slot, w in list(self.workers.items()):
                    if w.proc.poll() is None:
                        continue
                    if slot not in due:
                        self._retire(w)
                        young = now - w.started < 30
                        d = min(delay.get(slot, RESTART_DELAY[0] / 2) * 2 if young
                                else RESTART_DELAY[0], RESTART_DELAY[1])
                        delay[slot], due[slot] = d, now + d
                        log.warning("tftp worker exited; starting another",
                                    extra={"pid": w.pid, "status": w.proc.returncode,
                                           "restart_in": f"{d:.1f}s"})
                    elif now >= due.get(slot, now) and not self._stopping.is_set():
                        del due[slot]
                        nw = self._spawn(slot)
                        with self._lock:
                            self.workers[slot] = nw
                            self.restarts += 1
        finally:
            self.close()

    def _retire(self, w: Worker) -> None:
        if w.reader is not None:
            w.reader.join(timeout=1)
        if w.proc.stdin:
            w.proc.stdin.close()
        with self._lock:
            for k, v in w.stats.items():
                if k not in COUNTERS_NOT_SUMMED_OVER_TIME and isinstance(v, int):
                    self.retired[k] = self.retired.get(k, 0) + v
            w.stats = {}

    def shutdown(self) -> None:
        """Ask `run()` to stop; the workers get SIGTERM now, so they stop in parallel."""
        self._stopping.set()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            if w.proc.poll() is None:
                try:
                    w.proc.terminate()
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in workers:
            self._end(w)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock, _ in self.sockets:
            sock.close()
        self.sockets = []

    # ------------------------------------------------------------ what workers say
    def _read(self, w: Worker) -> None:
        assert w.proc.stdout is not None
        for raw in w.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("not an object")
            except ValueError:
                w.output.append(line[:500])
                del w.output[:-20]
                log.warning("tftp worker output", extra={"pid": w.pid, "line": line[:500]})
                continue
            try:
                self._on_message(w, msg)
            except Exception:  # noqa: BLE001 - one bad line must not stop the reader
                log.warning("could not handle a tftp worker message", exc_info=True)

    def _on_message(self, w: Worker, msg: dict) -> None:
        if "stats" in msg:
            with self._lock:
                w.stats = dict(msg["stats"])
        elif "event" in msg:
            self._forward_event(msg["event"])
        elif "log" in msg:
            rec = msg["log"]
            extra = {k: v for k, v in (rec.get("extra") or {}).items() if k not in _RECORD_FIELDS}
            log.log(int(rec.get("level", logging.INFO)), str(rec.get("msg", "")),
                    extra={**extra, "worker": w.pid})
        elif "ready" in msg:
            w.ready.set()

    def _forward_event(self, ev: dict) -> None:
        if self.events is None:
            return
        ip = ev.get("ip")
        try:
            host = self._host_by_ip(ip) if self._host_by_ip and ip else None
            self.events.event(ev.get("kind", "boot.tftp"), ev.get("message", ""),
                              level=ev.get("level", "info"), ip=ip, data=ev.get("data"),
                              host_id=host.id if host else None,
                              mac=host.macs[0] if host and host.macs else None)
        except Exception:  # noqa: BLE001 - a failing event sink must not stop TFTP
            log.warning("could not record a TFTP event", exc_info=True)

    # ------------------------------------------------------------ counters
    def stats(self) -> dict[str, Any]:
        """The workers' counters summed (dead workers' included), plus the pool's own."""
        with self._lock:
            total = dict(self.retired)
            for w in self.workers.values():
                for k, v in w.stats.items():
                    if isinstance(v, int):
                        total[k] = total.get(k, 0) + v
            total["workers"] = sum(1 for w in self.workers.values() if w.proc.poll() is None)
            total["worker_restarts"] = self.restarts
        total.setdefault("active", 0)
        return total

    def per_worker(self) -> dict[int, dict[str, Any]]:
        """The current workers' own counters, by pid."""
        with self._lock:
            return {w.pid: dict(w.stats) for w in self.workers.values()}
