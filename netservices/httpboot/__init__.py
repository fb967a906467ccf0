"""HTTP boot: iPXE scripts, kernels, initrds and iPXE binaries on `boot.http_listen`."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..httpserver import GuardedChannel, Limits, create_server
from ..listen import parse_listen
from .app import BootApp, NoArtifacts
from .scripts import BootSettings
from .streaming import SendfileChannel

__all__ = ["BOOT_LIMITS", "BootApp", "BootSettings", "HttpBootService", "NoArtifacts",
           "create_boot_app", "make_server", "make_servers"]

log = logging.getLogger("nixie.httpboot")


def create_boot_app(*, hosts, events, artifacts, settings: BootSettings, tftp_root: str,
                    agent=None, mounts: dict[str, Callable] | None = None,
                    zero_copy: bool = True) -> BootApp:
    """The WSGI app. `hosts` is a HostDirectory, `events` an EventSink, `artifacts` a
    BootArtifacts, `agent` an AgentSink (all from netservices.backend); `mounts` maps
    URL prefixes to other WSGI apps (e.g. the binary cache at /nix-cache)."""
    return BootApp(hosts=hosts, events=events, artifacts=artifacts, settings=settings,
                   tftp_root=tftp_root, agent=agent, mounts=mounts, zero_copy=zero_copy)


def _reuseport_socket(listen: str) -> socket.socket:
    family, host, port = parse_listen(listen)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


# What one client may cost HTTP boot: the only request with a body is the agent's
# event (a few hundred bytes of JSON); an iPXE or kernel download is never idle for
# long; a booting machine holds a handful of connections.
BOOT_LIMITS = Limits(max_body=64 * 1024, idle_timeout=60, request_timeout=30,
                     max_connections=1000, max_per_client=64)


class BootChannel(GuardedChannel, SendfileChannel):
    """A connection under BOOT_LIMITS whose artifact bytes leave with os.sendfile()."""


def make_server(app, listen: str, threads: int = 8, zero_copy: bool = True,
                sockets: list[socket.socket] | None = None, limits: Limits = BOOT_LIMITS):
    """A waitress server for `app` on "HOST:PORT ..." (or bound sockets), under
    `limits` (netservices/httpserver.py); with `zero_copy` its connections send
    artifact bytes with os.sendfile()."""
    where = {"sockets": sockets} if sockets is not None else {"listen": listen}
    return create_server(app, limits=limits, channel_class=BootChannel if zero_copy
                         else GuardedChannel, threads=threads, ident="nixie-boot", **where)


def make_servers(app, listen: str | list[str], workers: int = 2, threads: int = 8,
                 zero_copy: bool = True) -> list:
    """`workers` waitress servers on the same addresses (SO_REUSEPORT): the kernel spreads
    connections over them, so each has its own I/O loop (sendfile releases the GIL).
    `listen` is one HOST:PORT or a list of them (e.g. the LAN's IPv4 and IPv6 address)."""
    listens = [listen] if isinstance(listen, str) else list(listen)
    if workers <= 1:
        return [make_server(app, " ".join(listens), threads, zero_copy)]
    per = max(2, threads // workers)
    return [make_server(app, "", per, zero_copy, sockets=[_reuseport_socket(a) for a in listens])
            for _ in range(workers)]


class HttpBootService:
    """The supervised service: waitress on `boot.http_listen`."""

    name = "httpboot"

    def __init__(self, app: BootApp, listen: str | list[str], threads: int = 8,
                 workers: int = 2, prepare: Callable[[], None] | None = None):
        self.app = app
        self.listen = [listen] if isinstance(listen, str) else list(listen)
        self.prepare = prepare  # before binding: e.g. put the LAN's IPv6 address in place
        self.threads = threads
        self.workers = workers
        self._servers: list = []
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        with self._lock:
            if stop.is_set():
                return
            if self.prepare is not None:
                self.prepare()
            self._servers = make_servers(self.app, self.listen, self.workers, self.threads,
                                         zero_copy=self.app.zero_copy)
        log.info("http boot serving", extra={"listen": ",".join(self.listen), "workers": self.workers})
        extra = [threading.Thread(target=run_quietly, args=(srv,), name=f"httpboot-{i}",
                                  daemon=True) for i, srv in enumerate(self._servers[1:], 1)]
        for t in extra:
            t.start()
        try:
            run_quietly(self._servers[0])
        finally:
            with self._lock:
                servers, self._servers = self._servers, []
            for srv in servers:
                try:
                    srv.close()
                except OSError:
                    pass
            for t in extra:
                t.join(timeout=1)
            for srv in servers:
                srv.task_dispatcher.shutdown(timeout=1)

    def shutdown(self) -> None:
        for srv in list(self._servers):
            srv.close()

    def stats(self) -> dict[str, Any]:
        return {"connections": sum(len(s.active_channels) for s in self._servers),
                **self.app.stats()}


def run_quietly(server) -> None:
    """Run a waitress server until it is closed (close() under a running loop may
    surface as an OSError on the dead socket)."""
    try:
        server.run()
    except (OSError, ValueError):
        pass
