"""How `nixie serve` hosts the admin web UI: waitress, in the serve process or in
worker processes.

Python runs one thread of Python at a time, so a single process renders pages
on one core however many threads waitress has. With `web.workers` above 1,
serve binds the `web.listen` sockets itself and starts that many worker
processes (`python -m appliance.runtime.web_worker`) that share them: the kernel hands
each new connection to one worker. They run in the pool TFTP's workers run in
(netservices/workerpool.py): a worker gets its settings as one JSON line on
stdin and keeps stdin open; when serve goes away, even by SIGKILL, stdin ends
and the worker stops (and PR_SET_PDEATHSIG sends it SIGTERM). Web workers print
nothing for the pool: their log lines go straight to serve's stderr. Everything
a worker needs lives in the state DB (the web UI never holds state of its own
that another process must see), and serve's health, written to the DB every
heartbeat, is what a worker reports.

`WebService` (workers = 1) keeps the old in-process form, used on a one-CPU
machine and where a test wants the app in-process.

Either way the server is `make_web_server`: waitress under the limits of
`web_limits` (body sizes per surface, idle and request timeouts, connection caps:
netservices/httpserver.py) and, with `web.tls`, HTTPS with the certificate of
appliance/domain/tls_cert.py (appliance/runtime/tls.py says how).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config.schema import Config
from appliance.domain import tls_cert
from appliance.runtime.tls import CertSource, https_only, tls_channel
from appliance.state import secretfile
from appliance.state.status import read_status, with_storage
from netservices.httpserver import GuardedChannel, Limits, create_server
from netservices.listen import parse_listen, usable_cpus
from netservices.workerpool import WorkerPool

log = logging.getLogger("nixie.web")

MAX_AUTO_WORKERS = 4
WAITRESS_THREADS = 4
RESPAWN_PAUSE = 0.5  # before a dead worker's successor; doubles while they die young
RESPAWN_YOUNG_SECONDS = 5.0
STOP_GRACE_SECONDS = 0.8
RESPAWN_BACKOFF_MAX = 10.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it at import
ROOT = Path(__file__).resolve().parents[2]  # the dir holding appliance/ (and webui/)


def secret_key(cfg) -> bytes:
    """The session signing key, made (0600, atomically) on first use; ConfigError
    when the file is empty or short (appliance/state/secretfile.py)."""
    return secretfile.session_key(Path(cfg.web.secret_key_file or Path(cfg.state_dir) / "secret_key"))


# the paths whose bodies may be a whole hosts.json (web.max_import_bytes)
IMPORT_PATHS = ("/hosts/_import", "/api/v1/hosts-json")
# the paths whose bodies may be a whole backup archive (web.max_restore_bytes)
RESTORE_PATHS = ("/backup/restore", "/api/v1/backup/restore")


def web_limits(cfg: Config) -> Limits:
    web = cfg.web
    return Limits(max_body=web.max_body_bytes,
                  body_by_prefix=tuple((p, web.max_import_bytes) for p in IMPORT_PATHS)
                  + tuple((p, web.max_restore_bytes) for p in RESTORE_PATHS),
                  idle_timeout=web.idle_timeout_seconds,
                  request_timeout=web.request_timeout_seconds,
                  max_connections=web.max_connections,
                  max_per_client=web.max_connections_per_client)


def prepare_tls(cfg: Config, listen: list[str] | None = None) -> tls_cert.CertInfo | None:
    """With web.tls: the certificate made (first start; its names include every
    address of `listen`, by default web.listen) or checked, and announced by its
    fingerprint. Raises InvalidInput for a configured pair that is bad."""
    if not cfg.web.tls:
        return None
    cert = tls_cert.ensure(cfg, listen)
    log.info("web UI certificate", extra={"sha256": cert.fingerprint, "cert": cert.path,
                                          "self_signed": cert.self_signed})
    return cert


def make_web_server(app, cfg: Config, *, sockets: list[socket.socket] | None = None,
                    listen: list[str] | None = None, threads: int = WAITRESS_THREADS):
    """The admin UI's waitress server on `sockets` (else on `listen`, by default
    web.listen)."""
    channel = GuardedChannel
    if cfg.web.tls:
        paths = tls_cert.cert_paths(cfg)
        channel = tls_channel(CertSource(paths.cert, paths.key))
        app = https_only(app, cfg.web.hsts_seconds)
    where = {"sockets": sockets} if sockets is not None else {
        "listen": " ".join(cfg.web.listen if listen is None else listen)}
    return create_server(app, limits=web_limits(cfg), channel_class=channel, threads=threads,
                         ident="nixie", **where)


def worker_count(configured: int) -> int:
    """`web.workers`: 0 means one per CPU this process may use, at most 4."""
    return configured if configured > 0 else max(1, min(usable_cpus(), MAX_AUTO_WORKERS))


def bind_listeners(listen: list[str], backlog: int = 1024) -> list[socket.socket]:
    """One listening TCP socket per `web.listen` address (all or none)."""
    socks: list[socket.socket] = []
    try:
        for addr in listen:
            family, host, port = parse_listen(addr)
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.listen(backlog)
            s.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def prepared_bind(listen: list[str], prepare: Callable[[], None] | None
                  ) -> list[socket.socket]:
    """`bind_listeners(listen)` after `prepare` (e.g. the LAN's IPv6 address put in
    place), run at every bind: also when a pool binds again."""
    if prepare is not None:
        prepare()
    return bind_listeners(listen)


class WebService:
    """The admin UI + REST API on every `listen` address (by default web.listen),
    under waitress, in this process; `prepare` runs before they are bound."""

    name = "web"

    def __init__(self, app, cfg: Config, threads: int = WAITRESS_THREADS, *,
                 listen: list[str] | None = None, prepare: Callable[[], None] | None = None):
        self.app = app
        self.cfg = cfg
        self.listen = list(cfg.web.listen if listen is None else listen)
        self.prepare = prepare
        self.threads = threads
        self._server = None
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        with self._lock:
            if stop.is_set():
                return
            self._server = make_web_server(self.app, self.cfg, threads=self.threads,
                                           sockets=prepared_bind(self.listen, self.prepare))
        try:
            self._server.run()
        finally:
            self._close()

    def _close(self) -> None:
        with self._lock:
            srv, self._server = self._server, None
        if srv is not None:
            try:
                srv.close()
            finally:
                srv.task_dispatcher.shutdown(timeout=1)

    def shutdown(self) -> None:
        srv = self._server
        if srv is not None:
            srv.close()  # ends run()'s loop within asyncore_loop_timeout

    def stats(self) -> dict[str, Any]:
        return {"workers": 1, "in_process": True}


def metrics_dir(state_dir: str | Path) -> Path:
    """Where the web workers share their histograms: in RAM (/dev/shm), one directory
    per state dir, never on the state disk. prometheus-client writes them through
    mmap: on a full filesystem a write to a new page kills the worker with SIGBUS,
    and a full state disk must leave the admin UI answering."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        key = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]
        return shm / f"nixie-web-metrics-{os.getuid()}-{key}"
    return Path(state_dir) / "run" / "web-metrics"


class WebWorkers:
    """`workers` processes serving the web UI on sockets this process bound on every
    `listen` address (by default web.listen; `prepare` first), netservices/workerpool.py:
    a worker that dies is replaced (with a growing pause if it keeps dying), and all
    stop with serve (SIGTERM, SIGKILL after STOP_GRACE_SECONDS)."""

    name = "web"

    def __init__(self, cfg, workers: int, *, listen: list[str] | None = None,
                 prepare: Callable[[], None] | None = None):
        self.cfg = cfg
        self.workers = workers
        self.listen = list(cfg.web.listen if listen is None else listen)
        self.prepare = prepare
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()

    def _metrics_env(self) -> dict[str, str]:
        """The directory the workers' request latency histograms share
        (prometheus-client's multiprocess mode): /metrics, answered by any worker, sums
        every worker's, the replaced ones' too. Emptied at each start."""
        d = metrics_dir(self.cfg.state_dir)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, mode=0o700)
        return {MULTIPROC_ENV: str(d)}

    def _settings(self) -> dict[str, Any]:
        """What a worker cannot know by itself (the pool adds the sockets)."""
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        return {"config": self.cfg.to_dict(), "config_path": self.cfg.path,
                "log_level": str(level).lower()}

    def run(self, stop: threading.Event) -> None:
        pool = WorkerPool("web worker", self.workers,
                          [sys.executable, "-m", "appliance.runtime.web_worker"],
                          bind=lambda: prepared_bind(self.listen, self.prepare),
                          settings=self._settings(), log=log, reports=False,
                          pythonpath=str(ROOT), env=self._metrics_env(),
                          stop_grace=STOP_GRACE_SECONDS,
                          restart_delay=(RESPAWN_PAUSE, RESPAWN_BACKOFF_MAX),
                          young_seconds=RESPAWN_YOUNG_SECONDS)
        with self._lock:
            if stop.is_set():
                return
            self._pool = pool
        try:
            pool.run(stop)
        finally:
            shutil.rmtree(metrics_dir(self.cfg.state_dir), ignore_errors=True)

    def shutdown(self) -> None:
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.shutdown()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pool = self._pool
        pids = pool.pids() if pool is not None else []
        return {"workers": self.workers, "alive": len(pids), "pids": pids,
                "restarts": pool.restarts if pool is not None else 0}


# ---------------------------------------------------------------- the worker process


def stored_health(store, stale_seconds: float) -> dict[str, Any]:
    """serve's health as its last heartbeat wrote it to the DB; not ok once it is
    older than `stale_seconds` or serve said it stopped."""
    status = read_status(store.conn())
    if status is None:
        return {"ok": False, "services": {}, "error": "nixie serve has not reported its health yet"}
    age = time.time() - float(status.get("ts", 0))
    out = {"ok": bool(status.get("ok")), "services": status.get("services", {}),
           "reported_seconds_ago": round(age, 1)}
    if status.get("state") != "running":
        out.update(ok=False, error=f"nixie serve is {status.get('state')}")
    elif age > stale_seconds:
        out.update(ok=False, error=f"nixie serve has not reported for {age:.0f} s")
    # checked here too: on a full disk serve's heartbeat cannot be written
    return with_storage(out, store.path.parent)
