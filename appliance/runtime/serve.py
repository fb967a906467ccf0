"""`nixie serve`: the one process. It builds everything through the composition
root (`appliance.runtime.wiring`), supervises it, writes the heartbeat, and stops
on SIGTERM/SIGINT within 2 s. A backup staged by the web UI (`appliance.state.backup.stage`)
makes it stop with exit code 75 (systemd starts it again) and is restored first thing at
the next start."""

from __future__ import annotations

import logging
import signal
import time

from appliance.config.schema import Config
from appliance.domain import settings, setupcode, tls_cert
from appliance.errors import NixieError
from appliance.nix import gc
from appliance.router.bmc.power import boot_from_network
from appliance.runtime import wiring
from appliance.runtime.stopsignal import StopSignal
from appliance.state import backup
from appliance.state.db import Store, secure_state
from appliance.state.status import HEARTBEAT_SECONDS, write_status

log = logging.getLogger("nixie.serve")


def serve(cfg: Config, *, until=None, wake: list[str] | None = None) -> int:
    """Run every service until SIGTERM/SIGINT. `until(conn)` (stateless mode) is
    asked every heartbeat and ends the run with the exit code it returns.
    `wake`: host names to send Wake-on-LAN to once the services run."""
    restored = backup.restore_pending(cfg.state_dir)  # a backup the web UI staged
    fixed = secure_state(cfg.state_dir, cfg.db_path)  # 0700 / 0600, also when made by others
    if fixed:
        log.warning("state files were open to others than their owner; made them owner-only",
                    extra={"paths": ",".join(fixed)})
    store = Store(cfg.db_path)
    if restored:
        roots = gc.reroot(cfg, store)
        log.warning("restored the staged backup", extra={
            **restored.to_dict(), "gc_roots": roots["made"], "missing": ",".join(roots["missing"])})
    exit_code = 0
    runtime, supervisor = wiring.start(cfg, store)
    _announce_setup_code(cfg, store)
    stopping = StopSignal().install(signal.SIGTERM, signal.SIGINT)
    log.info("nixie serve starting", extra={"config": cfg.path, "state_dir": cfg.state_dir,
                                             "services": ",".join(s.name for s in supervisor.services)})
    _announce_web(runtime.cfg, wiring.web_listen_now(runtime.cfg, store.conn()))
    def beat(state: str = "running") -> None:
        try:
            write_status(store, runtime.health(), state=state)
        except Exception:  # noqa: BLE001 - a locked DB must not stop the appliance
            log.warning("could not write status heartbeat", exc_info=True)

    supervisor.start()
    deadline = time.monotonic() + 1.0
    while not supervisor.health()["ok"] and time.monotonic() < deadline:
        time.sleep(0.02)  # the services' threads are starting
    beat()  # web workers report this until the next beat
    if wake:
        _wake(runtime.cfg, store, wake)
    while not stopping.wait(HEARTBEAT_SECONDS):
        beat()
        if backup.pending_path(cfg.state_dir).exists():
            log.warning("a backup was staged for restore: stopping to restore it at the next start",
                        extra={"exit_code": backup.RESTART_EXIT})
            exit_code = backup.RESTART_EXIT
            break
        if until is not None:
            code = until(store.conn())
            if code is not None:
                exit_code = code
                break
    if stopping.is_set():
        log.info("signal received; stopping", extra={"signal": stopping.name})
    t0 = time.monotonic()
    clean = supervisor.stop(timeout=1.5)
    beat("stopped")
    log.info("nixie serve stopped", extra={"clean": clean, "seconds": f"{time.monotonic() - t0:.2f}",
                                           "exit_code": exit_code})
    return exit_code


def _announce_setup_code(cfg: Config, store: Store) -> None:
    """While setup is pending: the one-time setup code the wizard asks for, in the
    log once (when it is made); later starts name only the file that holds it."""
    code = settings.issue_setup_code(store.conn(), cfg.state_dir)
    path = str(setupcode.code_path(cfg.state_dir))
    if code is not None:
        log.warning("setup pending: open the web UI and enter this setup code in the wizard",
                    extra={"setup_code": code, "file": path})
    elif not settings.is_setup_complete(store.conn()):
        log.warning("setup pending: the setup code the wizard asks for is in the file",
                    extra={"file": path})


def _announce_web(cfg: Config, listen: list[str]) -> None:
    """The admin UI's addresses (every one it listens on) and certificate fingerprint,
    on the console at every start: what an admin compares with the browser's
    certificate dialog."""
    web = tls_cert.web_summary(cfg, listen)
    cert = web["certificate"] or {}
    log.info("admin web UI", extra={"url": " ".join(web["urls"]),
                                    **({"sha256": cert["sha256"]} if cert else {})})


def _wake(cfg: Config, store: Store, names: list[str]) -> None:
    """Boot each host from the network: through its BMC (next boot PXE once, then power on
    or cycle), else Wake-on-LAN. Every step is an event on the host; the run goes on."""
    for name in names:
        try:
            out = boot_from_network(store.conn(), name, interface=cfg.lan.interface)
        except NixieError as e:
            log.warning("could not boot host from the network", extra={"host": name,
                                                                         "error": str(e)})
        else:
            log.info(out.message, extra={"host": name, "via": out.via})
