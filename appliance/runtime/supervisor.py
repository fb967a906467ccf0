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
    """Each service runs in its own thread with its own stop event, so one service
    can be replaced (a settings change that needs new sockets) while the others
    keep running."""

    def __init__(self, services: list[Any], *, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, stable_after: float = 60.0):
        self.services = list(services)
        self.stop_event = threading.Event()
        self.status = {s.name: ServiceStatus(s.name) for s in services}
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after

    def start(self) -> None:
        for svc in self.services:
            self._start(svc)

    def _start(self, svc: Any) -> None:
        stop = threading.Event()
        t = threading.Thread(target=self._loop, args=(svc, stop), name=f"svc-{svc.name}",
                             daemon=True)
        self._stops[svc.name] = stop
        self._threads[svc.name] = t
        t.start()

    def add(self, svc: Any) -> None:
        """One more service, before `start` (or started at once after it)."""
        with self._lock:
            self.services.append(svc)
            self.status[svc.name] = ServiceStatus(svc.name)
            if self._threads:
                self._start(svc)

    def get(self, name: str) -> Any | None:
        return next((s for s in self.services if s.name == name), None)

    def replace(self, name: str, new: Any | None, timeout: float = 5.0) -> bool:
        """Stop the service `name` (if it runs) and start `new` in its place (None:
        just stop it). True when the old one's thread ended within `timeout`."""
        with self._lock:
            old = self.get(name)
            ok = True
            if old is not None:
                ok = self._stop_one(old, timeout)
                self.services.remove(old)
            if new is None:
                self.status.pop(name, None)
                return ok
            if self.stop_event.is_set():
                return ok
            self.services.append(new)
            self.status[new.name] = ServiceStatus(new.name)
            self._start(new)
            return ok

    def _stop_one(self, svc: Any, timeout: float) -> bool:
        self._stops[svc.name].set()
        self._shutdown(svc)
        t = self._threads.pop(svc.name)
        t.join(timeout)
        return not t.is_alive()

    @staticmethod
    def _shutdown(svc: Any) -> None:
        shutdown = getattr(svc, "shutdown", None)
        if shutdown:
            try:
                shutdown()
            except Exception:  # noqa: BLE001
                log.exception("shutdown failed", extra={"service": svc.name})

    def _loop(self, svc: Any, stop: threading.Event) -> None:
        st = self.status[svc.name]
        delay = self.backoff_initial
        while not stop.is_set():
            st.state, st.started_at = "running", time.time()
            log.info("service started", extra={"service": svc.name})
            try:
                svc.run(stop)
                if stop.is_set():
                    break
                raise RuntimeError("service returned without being stopped")
            except Exception as e:  # noqa: BLE001 - a service must never take the process down
                if stop.is_set():
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
                if stop.wait(delay):
                    break
                delay = min(delay * 2, self.backoff_max)
        st.state = "stopped"

    def stop(self, timeout: float = 1.5) -> bool:
        """Stop every service; True if all threads ended within `timeout`."""
        with self._lock:
            self.stop_event.set()
            for ev in self._stops.values():
                ev.set()
            for svc in self.services:
                self._shutdown(svc)
            deadline = time.monotonic() + timeout
            ok = True
            for t in self._threads.values():
                t.join(max(0.0, deadline - time.monotonic()))
                ok = ok and not t.is_alive()
            return ok

    def health(self) -> dict[str, Any]:
        services = {}
        for svc in list(self.services):
            status = self.status.get(svc.name)
            if status is None:
                continue
            d = status.to_dict()
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
