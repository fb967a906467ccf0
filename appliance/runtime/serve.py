"""`nixie serve`: the one process, and the one place that wires the rooms together.

Each room gets what it needs passed into its factory (config values, the
backend over the state DB); `netservices` and `webui` never import each other.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from appliance.config.schema import Config
from appliance.domain.boot_backend import SqliteBackend
from appliance.domain.lease_store import dhcp_service
from appliance.nix.binary_cache import create_binary_cache
from appliance.nix.bootartifacts import StoreBootArtifacts
from appliance.router.discovery import DiscoveryService
from appliance.router.firewall import FirewallService
from appliance.router.network import NetworkWatchdog
from appliance.router.vpn import VpnService
from appliance.runtime.supervisor import Supervisor
from appliance.state.db import Store
from appliance.state.status import HEARTBEAT_SECONDS, write_status
from netservices.tftp import TftpService

log = logging.getLogger("nixie.serve")


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


def web_service(cfg: Config, store: Store, health):
    """`web.workers` processes sharing the listeners, or (1) waitress in this process."""
    from appliance.runtime.webserver import (
        WebService,
        WebWorkers,
        secret_key,
        web_app,
        worker_count,
    )

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
    from appliance.nix.buildworker import BuildWorker

    return BuildWorker(cfg, store)


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
    def beat(state: str = "running") -> None:
        try:
            write_status(store, supervisor.health(), state=state)
        except Exception:  # noqa: BLE001 - a locked DB must not stop the appliance
            log.warning("could not write status heartbeat", exc_info=True)

    supervisor.start()
    deadline = time.monotonic() + 1.0
    while not supervisor.health()["ok"] and time.monotonic() < deadline:
        time.sleep(0.02)  # the services' threads are starting
    beat()  # web workers report this until the next beat
    if wake:
        _wake(cfg, store, wake)
    while not stopping.wait(HEARTBEAT_SECONDS):
        beat()
        if until is not None:
            code = until(store.conn())
            if code is not None:
                exit_code = code
                break
    t0 = time.monotonic()
    clean = supervisor.stop(timeout=1.5)
    beat("stopped")
    log.info("nixie serve stopped", extra={"clean": clean, "seconds": f"{time.monotonic() - t0:.2f}",
                                           "exit_code": exit_code})
    return exit_code


def _wake(cfg: Config, store: Store, names: list[str]) -> None:
    from appliance.router.wol import WakeFailed, wake_host

    for name in names:
        try:
            wake_host(store.conn(), name, interface=cfg.lan.interface)
        except WakeFailed as e:  # recorded as an event by wake_host; the run goes on
            log.warning("Wake-on-LAN failed", extra={"host": name, "error": str(e)})
