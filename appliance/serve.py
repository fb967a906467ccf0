"""`nixie serve`: the one process, and the one place that wires the rooms together.

Each room gets what it needs passed into its factory (config values, the
backend over the state DB); `netservices` and `webui` never import each other.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

from .backend import SqliteBackend
from .config import Config
from .db import Store, now
from .dhcp_store import dhcp_service
from .supervisor import IdleService, Supervisor

log = logging.getLogger("nixie.serve")
HEARTBEAT_SECONDS = 2.0


class WebService:
    """The admin UI + REST API on every `web.listen` address, under waitress."""

    name = "web"

    def __init__(self, app, listen: list[str], threads: int = 8):
        self.app = app
        self.listen = listen
        self.threads = threads
        self._server = None
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        from waitress.server import create_server

        with self._lock:
            if stop.is_set():
                return
            self._server = create_server(self.app, listen=" ".join(self.listen),
                                         threads=self.threads, asyncore_loop_timeout=0.2,
                                         ident="nixie")
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


def secret_key(cfg: Config) -> bytes:
    path = Path(cfg.web.secret_key_file or Path(cfg.state_dir) / "secret_key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def build_services(cfg: Config, store: Store, health) -> list[Any]:
    """Every service `serve` supervises, each built by its room's factory."""
    from webui import create_app
    from webui.app import WebContext

    backend = SqliteBackend(store)  # noqa: F841 - handed to the netservices as they land
    services: list[Any] = []
    services.append(dhcp_service(cfg) if cfg.dhcp.mode != "off" else None)
    services.append(IdleService("tftp", "not built yet"))
    services.append(IdleService("dns", "not built yet") if cfg.dns.enable else None)
    services.append(IdleService("httpboot", "not built yet"))
    services.append(IdleService("builder", "not built yet"))
    app = create_app(WebContext(store=store, config=cfg, health=health, secret_key=secret_key(cfg)))
    services.append(WebService(app, cfg.web.listen))
    return [s for s in services if s is not None]


def write_status(store: Store, health: dict[str, Any], state: str = "running") -> None:
    value = json.dumps({"pid": os.getpid(), "ts": now(), "state": state, **health})
    store.conn().execute(
        "INSERT INTO settings (key, value) VALUES ('serve.status', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (value,))


def serve(cfg: Config) -> int:
    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_path)
    supervisor: Supervisor | None = None

    def health() -> dict[str, Any]:
        return supervisor.health() if supervisor else {"ok": False, "services": {}}

    supervisor = Supervisor(build_services(cfg, store, health))
    stopping = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal received; stopping", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("nixie serve starting", extra={"config": cfg.path, "state_dir": cfg.state_dir,
                                             "services": ",".join(s.name for s in supervisor.services)})
    supervisor.start()
    while not stopping.wait(HEARTBEAT_SECONDS):
        try:
            write_status(store, supervisor.health())
        except Exception:  # noqa: BLE001 - a locked DB must not stop the appliance
            log.warning("could not write status heartbeat", exc_info=True)
    t0 = time.monotonic()
    clean = supervisor.stop(timeout=1.5)
    try:
        write_status(store, supervisor.health(), state="stopped")
    except Exception:  # noqa: BLE001
        pass
    log.info("nixie serve stopped", extra={"clean": clean, "seconds": f"{time.monotonic() - t0:.2f}"})
    return 0
