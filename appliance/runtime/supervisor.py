"""Runs each service in its own thread; restarts one that fails, with backoff.

A service is any object with a `name` and a `run(stop)` method that blocks
until `stop` (a threading.Event) is set. It may also have `shutdown()`, called
once when stopping, to unblock a server loop (close a socket, stop waitress),
and `ready()`, False while it is still starting (e.g. its worker processes):
until then health() reports it `starting`, and so not ok.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("nixie.supervisor")


class Service(Protocol):
    name: str

    def run(self, stop: threading.Event) -> None: ...


@dataclass
class ServiceStatus:
    name: str
    state: str = "starting"  # starting | running | backoff | stopped | failed
    restarts: int = 0
    last_error: str | None = None
    started_at: float | None = None
    backoffs: list[float] = field(default_factory=list)  # delays chosen, newest last (max 10)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "restarts": self.restarts,
                "last_error": self.last_error, "started_at": self.started_at, **self.extra}


class Supervisor:
    def __init__(self, services: list[Any], *, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, stable_after: float = 60.0):
        self.services = services
        self.stop_event = threading.Event()
        self.status = {s.name: ServiceStatus(s.name) for s in services}
        self._threads: list[threading.Thread] = []
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after

    def start(self) -> None:
        for svc in self.services:
            t = threading.Thread(target=self._loop, args=(svc,), name=f"svc-{svc.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self, svc: Any) -> None:
        st = self.status[svc.name]
        delay = self.backoff_initial
        while not self.stop_event.is_set():
            st.state, st.started_at = "running", time.time()
            log.info("service started", extra={"service": svc.name})
            try:
                svc.run(self.stop_event)
                if self.stop_event.is_set():
                    break
                raise RuntimeError("service returned without being stopped")
            except Exception as e:  # noqa: BLE001 - a service must never take the process down
                if self.stop_event.is_set():
                    break
                st.restarts += 1
                st.last_error = f"{type(e).__name__}: {e}"
                if time.time() - (st.started_at or 0) > self.stable_after:
                    delay = self.backoff_initial
                st.state = "backoff"
                st.backoffs = [*st.backoffs[-9:], delay]
                log.error("service failed; restarting", exc_info=True,
                          extra={"service": svc.name, "restart_in": f"{delay:.1f}s",
                                 "restarts": st.restarts})
                if self.stop_event.wait(delay):
                    break
                delay = min(delay * 2, self.backoff_max)
        st.state = "stopped"

    def stop(self, timeout: float = 1.5) -> bool:
        """Stop every service; True if all threads ended within `timeout`."""
        self.stop_event.set()
        for svc in self.services:
            shutdown = getattr(svc, "shutdown", None)
            if shutdown:
                try:
                    shutdown()
                except Exception:  # noqa: BLE001
                    log.exception("shutdown failed", extra={"service": svc.name})
        deadline = time.monotonic() + timeout
        ok = True
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            ok = ok and not t.is_alive()
        return ok

    def health(self) -> dict[str, Any]:
        services = {}
        for svc in self.services:
            d = self.status[svc.name].to_dict()
            ready = getattr(svc, "ready", None)
            if d["state"] == "running" and callable(ready) and not ready():
                d["state"] = "starting"
            stats = getattr(svc, "stats", None)
            if callable(stats):
                try:
                    d["stats"] = stats()
                except Exception:  # noqa: BLE001
                    d["stats"] = None
            services[svc.name] = d
        ok = all(s["state"] == "running" for s in services.values())
        return {"ok": ok, "services": services}
