"""Worker processes sharing listen sockets the parent bound: the one pool behind
TFTP's workers (`netservices/tftp/workers.py`) and the web UI's
(`appliance/runtime/webserver.py`).

The parent side, `WorkerPool`:
- binds the listen sockets itself (`bind`), so a taken address fails at once, in
  the parent, and nothing else can join the port; an address still held by the
  workers of a server that was just killed is retried for a moment
  (`bind_retrying`);
- starts `size` fresh interpreters (`command`, never a fork of the threaded
  parent) that inherit those sockets (`pass_fds`), and writes each one its
  settings as one JSON line on stdin (`settings` plus `fds`, the inherited
  descriptors in `bind`'s order, and `parent`, this pid). Stdin stays open: its
  end tells the worker the parent is gone, even a SIGKILLed parent;
- with `reports`, reads each worker's stdout as JSON lines (below) in a thread
  per worker and waits for every worker's `ready` line before `run` calls
  `on_ready` (a worker that exits first raises `WorkerFailed`); without, stdout is
  the parent's and a worker counts as started once it runs;
- starts a worker that exits again after `restart_delay[0]`, doubling up to
  `restart_delay[1]` while workers keep dying within `young_seconds` of their
  start; every worker is started from the thread running `run()`, because
  PR_SET_PDEATHSIG follows the thread that forked, not the process;
- stops them all on `shutdown()` or `stop`: SIGTERM and stdin closed at once,
  SIGKILL for those still running `stop_grace` seconds later.

A worker's lines to the pool (`Reports` writes them):
  {"ready": pid}                                      it serves
  {"stats": {...}}                                    a counter snapshot
  {"log": {"level": .., "msg": .., "extra": {..}}}    a log record, logged by the parent
  anything else                                       `on_message(worker, msg)`
Counters are summed over the workers; a dead worker's last snapshot is kept, so
totals never go back (what it counted after that snapshot is lost), except the
`gauges` (e.g. transfers active now), which end with their worker.

The worker side: `join_pool()` first (settings, PR_SET_PDEATHSIG, ^C ignored),
`on_parent_gone(stop)` to end with the parent, and `Reports` for the lines.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .listen import bind_retrying

PR_SET_PDEATHSIG = 1
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_NOT_FORWARDED = _RECORD_FIELDS | {"worker"}  # the parent sets `worker` itself


class WorkerFailed(OSError):
    """A worker exited (or said nothing) before it was serving."""


class Worker:
    """One worker process and what it reported."""

    def __init__(self, slot: int, proc: subprocess.Popen):
        self.slot = slot
        self.proc = proc
        self.pid = proc.pid
        self.started = time.monotonic()
        self.ready = threading.Event()
        self.stats: dict[str, Any] = {}  # its last counter snapshot
        self.retired = False  # its counters were folded into the pool's
        self.output: list[str] = []  # its last lines that were not JSON (a traceback)
        self.reader: threading.Thread | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None


class WorkerPool:
    """`size` processes running `command` on the sockets `bind()` returns, kept
    running by `run(stop)` until `stop` or `shutdown()`. One run per pool."""

    def __init__(self, name: str, size: int, command: Sequence[str],
                 bind: Callable[[], Sequence[socket.socket]],
                 settings: Mapping[str, Any] | None = None, *,
                 log: logging.Logger | None = None, reports: bool = True,
                 on_message: Callable[[Worker, dict], None] | None = None,
                 gauges: frozenset[str] = frozenset(), pythonpath: str | None = None,
                 env: Mapping[str, str] | None = None,
                 about: Mapping[str, Any] | None = None,
                 ready_timeout: float = 15.0, bind_retry_seconds: float = 3.0,
                 stop_grace: float = 1.0, restart_delay: tuple[float, float] = (0.2, 5.0),
                 young_seconds: float = 30.0):
        self.name = name  # "tftp worker": in log lines, errors and thread names
        self.size = size
        self.command = list(command)
        self.bind = bind
        self.settings = dict(settings or {})
        self.log = log or logging.getLogger("nixie.workers")
        self.reports = reports
        self.on_message = on_message
        self.gauges = gauges
        self.pythonpath = pythonpath  # put first on the workers' PYTHONPATH
        self.env = dict(env or {})  # set in the workers' environment
        self.about = dict(about or {})  # added to the "serving" log line
        self.ready_timeout = ready_timeout
        self.bind_retry_seconds = bind_retry_seconds
        self.stop_grace = stop_grace
        self.restart_delay = restart_delay
        self.young_seconds = young_seconds
        self.sockets: list[socket.socket] = []  # bound here, shared by the workers
        self.workers: dict[int, Worker] = {}  # slot -> its current worker
        self.retired: dict[str, int] = {}  # counters of workers that have exited
        self.restarts = 0
        self.delays: list[float] = []  # restart pauses chosen, newest last (at most 10)
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # ------------------------------------------------------------ processes
    def _spawn(self, slot: int) -> Worker:
        fds = [s.fileno() for s in self.sockets]
        env = {**os.environ, **self.env}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        out = subprocess.PIPE if self.reports else None
        proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT if self.reports else None,
                                env=env, close_fds=True, pass_fds=fds)
        w = Worker(slot, proc)
        assert proc.stdin is not None
        line = json.dumps({**self.settings, "fds": fds, "parent": os.getpid()}) + "\n"
        try:
            proc.stdin.write(line.encode())
            proc.stdin.flush()  # stdin stays open: its end tells the worker we are gone
        except OSError:
            pass  # it exited already: seen like any other exit
        if self.reports:
            w.reader = threading.Thread(target=self._read, args=(w,), daemon=True,
                                        name=f"{self.name.replace(' ', '-')}-{slot}")
            w.reader.start()
        else:
            w.ready.set()
        self.log.info(f"{self.name} started", extra={"slot": slot, "pid": proc.pid})
        return w

    def _stopped(self, stop: threading.Event | None) -> bool:
        return self._stopping.is_set() or (stop is not None and stop.is_set())

    def _wait_ready(self, w: Worker, stop: threading.Event | None) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not w.ready.wait(0.05):
            if self._stopped(stop):
                return  # run() stops them all
            dead = not w.alive()
            if dead and w.reader is not None:
                w.reader.join(timeout=1)  # what it wrote before it exited
                if w.ready.is_set():
                    return  # it served, then died: run() starts another
            if dead or time.monotonic() > deadline:
                if w.alive():
                    w.proc.kill()
                w.proc.wait()
                if w.reader is not None:
                    w.reader.join(timeout=1)
                detail = " | ".join(w.output[-5:]) or f"exit status {w.proc.returncode}"
                raise WorkerFailed(f"{self.name} did not start: {detail}")

    def start(self, stop: threading.Event | None = None) -> None:
        """Bind (OSError if an address cannot be bound), start every worker and wait
        until each one serves (WorkerFailed if one does not)."""
        self.sockets = list(bind_retrying(self.bind, stop, self.bind_retry_seconds))
        try:
            for slot in range(self.size):
                w = self._spawn(slot)
                with self._lock:
                    self.workers[slot] = w  # shutdown() reaches it from now on
            for w in list(self.workers.values()):
                self._wait_ready(w, stop)
        except BaseException:
            self.close()
            with self._lock:
                self.workers = {}
            raise

    def run(self, stop: threading.Event | None = None,
            on_ready: Callable[[], None] | None = None) -> None:
        """Start the workers, keep them running until `stop` or `shutdown()`, then
        stop them. `on_ready()` is called once every worker serves."""
        if self._stopped(stop):
            return
        self.start(stop)
        try:
            if not self._stopped(stop):
                if on_ready is not None:
                    on_ready()
                pids = ",".join(str(w.pid) for w in self.workers.values())
                self.log.info(f"{self.name}s serving",
                              extra={**self.about, "workers": self.size, "pids": pids})
            self._supervise(stop)
        finally:
            self.close()

    def _supervise(self, stop: threading.Event | None) -> None:
        due: dict[int, float] = {}  # slot -> when to start its next worker
        delay: dict[int, float] = {}  # slot -> its last pause (doubles while workers die young)
        first, longest = self.restart_delay
        while not self._stopping.wait(0.1) and not (stop is not None and stop.is_set()):
            now = time.monotonic()
            for slot, w in list(self.workers.items()):
                if slot in due:
                    if now >= due[slot]:
                        del due[slot]
                        nw = self._spawn(slot)
                        with self._lock:
                            self.workers[slot] = nw
                            self.restarts += 1
                    continue
                if w.alive():
                    continue
                self._retire(w)
                young = now - w.started < self.young_seconds
                d = min(delay[slot] * 2, longest) if young and slot in delay else first
                delay[slot], due[slot] = d, now + d
                self.delays = [*self.delays[-9:], d]
                self.log.warning(f"{self.name} exited; starting another",
                                 extra={"slot": slot, "pid": w.pid, "status": w.proc.returncode,
                                        "restart_in": f"{d:.1f}s"})

    def _retire(self, w: Worker) -> None:
        """Fold a dead worker's last snapshot into the totals (its reader has read
        what it wrote before it died)."""
        if w.reader is not None:
            w.reader.join(timeout=1)
        self._close_stdin(w)
        with self._lock:
            for k, v in w.stats.items():
                if k not in self.gauges and isinstance(v, int):
                    self.retired[k] = self.retired.get(k, 0) + v
            w.stats = {}
            w.retired = True

    def shutdown(self) -> None:
        """Ask `run()` to stop; the workers get SIGTERM now, so they stop in parallel."""
        self._stopping.set()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            self._terminate(w)

    @staticmethod
    def _terminate(w: Worker) -> None:
        if w.alive():
            try:
                w.proc.terminate()
            except OSError:
                pass

    @staticmethod
    def _close_stdin(w: Worker) -> None:
        """Close the pipe to the worker: the end of its stdin tells it to stop."""
        if w.proc.stdin:
            try:
                w.proc.stdin.close()
            except OSError:  # it died with the settings line unread
                pass

    def close(self) -> None:
        """End every worker (SIGTERM and stdin closed, SIGKILL after `stop_grace`),
        wait for them and their readers, and close the sockets."""
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            self._terminate(w)
            self._close_stdin(w)
        deadline = time.monotonic() + self.stop_grace
        for w in workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        for w in workers:
            if w.reader is not None:
                w.reader.join(timeout=1)
        for s in self.sockets:
            s.close()
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
                self.log.warning(f"{self.name} output", extra={"pid": w.pid, "line": line[:500]})
                continue
            try:
                self._on_line(w, msg)
            except Exception:  # noqa: BLE001 - one bad line must not stop the reader
                self.log.warning(f"could not handle a {self.name} message", exc_info=True)

    def _on_line(self, w: Worker, msg: dict) -> None:
        if "stats" in msg:
            with self._lock:
                if not w.retired:
                    w.stats = dict(msg["stats"])
        elif "log" in msg:
            rec = msg["log"]
            extra = {k: v for k, v in (rec.get("extra") or {}).items()
                     if k not in _NOT_FORWARDED}
            self.log.log(int(rec.get("level", logging.INFO)), str(rec.get("msg", "")),
                         extra={**extra, "worker": w.pid})
        elif "ready" in msg:
            w.ready.set()
        elif self.on_message is not None:
            self.on_message(w, msg)

    # ------------------------------------------------------------ counters
    def totals(self) -> dict[str, int]:
        """Every integer counter summed over the workers, dead ones included."""
        with self._lock:
            total = dict(self.retired)
            for w in self.workers.values():
                for k, v in w.stats.items():
                    if isinstance(v, int):
                        total[k] = total.get(k, 0) + v
        return total

    def alive(self) -> int:
        with self._lock:
            return sum(1 for w in self.workers.values() if w.alive())

    def pids(self) -> list[int]:
        """The pids of the workers running now, by slot."""
        with self._lock:
            return [w.pid for _, w in sorted(self.workers.items()) if w.alive()]

    def per_worker(self) -> dict[int, dict[str, Any]]:
        """The current workers' own last snapshots, by pid."""
        with self._lock:
            return {w.pid: dict(w.stats) for w in self.workers.values()}


# ---------------------------------------------------------------- in the worker


def join_pool() -> dict[str, Any]:
    """What a worker does first: ignore ^C (the pool decides when it stops), read
    its settings line (exit quietly if the pool is already gone), and arrange a
    SIGTERM when the pool's thread that started it dies (PR_SET_PDEATHSIG)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line = sys.stdin.buffer.readline()
    if not line.endswith(b"\n"):
        sys.exit(0)  # stdin ended: the pool is gone
    settings = json.loads(line)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the end of stdin still ends us
    if os.getppid() != settings["parent"]:
        sys.exit(0)  # the pool died before the death signal was set
    return settings


def on_parent_gone(stop: Callable[[], None]) -> threading.Thread:
    """Call `stop()` (in a thread of its own) when stdin ends: the pool closed it or
    died, even by SIGKILL."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read1(4096):
                pass
        except (OSError, ValueError):
            pass
        stop()

    t = threading.Thread(target=watch, name="parent-watch", daemon=True)
    t.start()
    return t


class Reports:
    """A worker's JSON lines to the pool, on stdout, one writer at a time."""

    def __init__(self, fd: int | None = None):
        self.fd = sys.stdout.fileno() if fd is None else fd
        self.lock = threading.Lock()

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj, default=str) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]

    def ready(self) -> None:
        self.send({"ready": os.getpid()})

    def stats(self, snapshot: Mapping[str, Any]) -> None:
        self.send({"stats": dict(snapshot)})

    def stats_every(self, interval: float, snapshot: Callable[[], Mapping[str, Any]],
                    done: threading.Event) -> threading.Thread:
        """A thread sending `snapshot()` every `interval` seconds when it changed,
        until `done` (the last one, at exit, is the caller's)."""

        def loop() -> None:
            last = None
            while not done.wait(interval):
                now = dict(snapshot())
                if now != last:
                    self.stats(now)
                    last = now

        t = threading.Thread(target=loop, name="stats-report", daemon=True)
        t.start()
        return t

    def log_handler(self) -> logging.Handler:
        return _PipeLogHandler(self)


class _PipeLogHandler(logging.Handler):
    """Log records go to the pool, which logs them in its own format."""

    def __init__(self, out: Reports):
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
