"""HTTP boot: iPXE scripts, kernels, initrds and iPXE binaries on `boot.http_listen`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .app import BootApp, NoArtifacts
from .scripts import BootSettings
from .streaming import SendfileChannel

__all__ = ["BootApp", "BootSettings", "HttpBootService", "NoArtifacts", "create_boot_app"]

log = logging.getLogger("nixie.httpboot")


def create_boot_app(*, hosts, events, artifacts, settings: BootSettings, tftp_root: str,
                    agent=None, mounts: dict[str, Callable] | None = None,
                    zero_copy: bool = True) -> BootApp:
    """The WSGI app. `hosts` is a HostDirectory, `events` an EventSink, `artifacts` a
    BootArtifacts, `agent` an AgentSink (all from netservices.backend); `mounts` maps
    URL prefixes to other WSGI apps (e.g. the binary cache at /nix-cache)."""
    return BootApp(hosts=hosts, events=events, artifacts=artifacts, settings=settings,
                   tftp_root=tftp_root, agent=agent, mounts=mounts, zero_copy=zero_copy)


def make_server(app, listen: str, threads: int = 8, zero_copy: bool = True):
    """A waitress server for `app` on one HOST:PORT; with `zero_copy` its connections
    send artifact bytes with os.sendfile()."""
    from waitress.server import create_server

    server = create_server(app, listen=listen, threads=threads, asyncore_loop_timeout=0.2,
                           ident="nixie-boot", connection_limit=1000, channel_timeout=300)
    if zero_copy:
        server.channel_class = SendfileChannel
    return server


class HttpBootService:
    """The supervised service: waitress on `boot.http_listen`."""

    name = "httpboot"

    def __init__(self, app: BootApp, listen: str, threads: int = 8):
        self.app = app
        self.listen = listen
        self.threads = threads
        self._server = None
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        with self._lock:
            if stop.is_set():
                return
            self._server = make_server(self.app, self.listen, self.threads,
                                       zero_copy=self.app.zero_copy)
        log.info("http boot serving", extra={"listen": self.listen})
        try:
            self._server.run()
        finally:
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
            srv.close()

    def stats(self) -> dict[str, Any]:
        srv = self._server
        return {"connections": len(srv.active_channels)} if srv is not None else {}
