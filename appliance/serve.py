"""`nixie serve`: the one process, and the one place that wires the rooms together.

Each room gets what it needs passed into its factory (config values, the
backend over the state DB); `netservices` and `webui` never import each other.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

from netservices.tftp import TftpService

from .backend import SqliteBackend
from .binary_cache import create_binary_cache
from .bootartifacts import StoreBootArtifacts
from .config import Config
from .db import Store, now
from .dhcp_store import dhcp_service
from .discovery import DiscoveryService
from .firewall import FirewallService
from .network import NetworkWatchdog
from .supervisor import Supervisor
from .vpn import VpnService

log = logging.getLogger("nixie.serve")
HEARTBEAT_SECONDS = 2.0


def secret_key(cfg: Config) -> bytes:
    path = Path(cfg.web.secret_key_file or Path(cfg.state_dir) / "secret_key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def dns_service(cfg: Config, backend: SqliteBackend):
    from netservices.dns import make_dns_service

    vpn = [str(ipaddress.IPv4Interface(cfg.vpn.address).network)] if cfg.vpn.enable else []
    return make_dns_service(listen=cfg.dns.listen, domain=cfg.lan.domain,
                            network=str(cfg.lan_interface.network), directory=backend,
                            upstreams=cfg.dns.upstream, clients=vpn)


def httpboot_service(cfg: Config, backend: SqliteBackend, artifacts, mounts: dict | None = None):
    """HTTP boot on boot.http_listen: scripts, kernels and initrds from `artifacts`
    (the image builder), the agent API, and `mounts` (the binary cache)."""
    from netservices.httpboot import BootSettings, HttpBootService, create_boot_app

    settings = BootSettings(base_url=cfg.boot_base_url, menu=cfg.boot.menu,
                            menu_timeout_seconds=cfg.boot.menu_timeout_seconds,
                            cmdline=cfg.boot.cmdline, unknown_clients=cfg.dhcp.unknown_clients)
    app = create_boot_app(hosts=backend, events=backend, artifacts=artifacts, agent=backend,
                          settings=settings, tftp_root=str(cfg.tftp_root), mounts=mounts or {})
    return HttpBootService(app, cfg.boot.http_listen)


def web_app(cfg: Config, store: Store, health):
    """The admin web UI's Flask app (in serve, or in a web worker process)."""
    from webui import create_app
    from webui.app import WebContext

    return create_app(WebContext(store=store, config=cfg, health=health, secret_key=secret_key(cfg)))


def web_service(cfg: Config, store: Store, health):
    """`web.workers` processes sharing the listeners, or (1) waitress in this process."""
    from .webserver import WebService, WebWorkers, worker_count

    n = worker_count(cfg.web.workers)
    if n == 1:
        return WebService(web_app(cfg, store, health), cfg.web.listen)
    secret_key(cfg)  # made once here, before the workers read it
    return WebWorkers(cfg, n)


def build_services(cfg: Config, store: Store, health) -> list[Any]:
    """Every service `serve` supervises, each built by its room's factory."""
    backend = SqliteBackend(store)
    services: list[Any] = []
    services.append(dhcp_service(cfg) if cfg.dhcp.mode != "off" else None)
    services.append(TftpService(cfg.tftp_root, cfg.tftp.listen, ipxe_dir=cfg.tftp.ipxe_dir,
                                events=backend, hosts=backend, workers=cfg.tftp.workers,
                                busy_poll_us=cfg.tftp.busy_poll_us))
    services.append(dns_service(cfg, backend) if cfg.dns.enable else None)
    services.append(httpboot_service(cfg, backend, StoreBootArtifacts(cfg, store),
                                     mounts={"/nix-cache": create_binary_cache(cfg)}))
    services.append(_build_worker(cfg, store))
    services.append(web_service(cfg, store, health))
    services.append(DiscoveryService(store, cfg.lan.interface))
    services.append(NetworkWatchdog(store, cfg.state_dir, cfg=cfg))
    services.append(VpnService(cfg, store) if cfg.vpn.enable else None)
    services.append(FirewallService(cfg, store) if cfg.firewall.enable else None)
    return [s for s in services if s is not None]


def _build_worker(cfg: Config, store: Store):
    from .buildworker import BuildWorker

    return BuildWorker(cfg, store)


def write_status(store: Store, health: dict[str, Any], state: str = "running") -> None:
    value = json.dumps({"pid": os.getpid(), "ts": now(), "state": state, **health})
    store.conn().execute(
        "INSERT INTO settings (key, value) VALUES ('serve.status', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (value,))


def serve(cfg: Config, *, until=None, wake: list[str] | None = None) -> int:
    """Run every service until SIGTERM/SIGINT. `until(conn)` (stateless mode) is
    asked every heartbeat and ends the run with the exit code it returns.
    `wake`: host names to send Wake-on-LAN to once the services run."""
    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_path)
    supervisor: Supervisor | None = None
    exit_code = 0

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
    deadline = time.monotonic() + 1.0
    while not supervisor.health()["ok"] and time.monotonic() < deadline:
        time.sleep(0.02)  # the services' threads are starting
    try:
        write_status(store, supervisor.health())  # web workers report this until the next beat
    except Exception:  # noqa: BLE001
        log.warning("could not write status heartbeat", exc_info=True)
    if wake:
        _wake(cfg, store, wake)
    while not stopping.wait(HEARTBEAT_SECONDS):
        try:
            write_status(store, supervisor.health())
        except Exception:  # noqa: BLE001 - a locked DB must not stop the appliance
            log.warning("could not write status heartbeat", exc_info=True)
        if until is not None:
            code = until(store.conn())
            if code is not None:
                exit_code = code
                break
    t0 = time.monotonic()
    clean = supervisor.stop(timeout=1.5)
    try:
        write_status(store, supervisor.health(), state="stopped")
    except Exception:  # noqa: BLE001
        pass
    log.info("nixie serve stopped", extra={"clean": clean, "seconds": f"{time.monotonic() - t0:.2f}",
                                           "exit_code": exit_code})
    return exit_code


def _wake(cfg: Config, store: Store, names: list[str]) -> None:
    from .wol import WakeFailed, wake_host

    for name in names:
        try:
            wake_host(store.conn(), name, interface=cfg.lan.interface)
        except WakeFailed as e:  # recorded as an event by wake_host; the run goes on
            log.warning("Wake-on-LAN failed", extra={"host": name, "error": str(e)})
