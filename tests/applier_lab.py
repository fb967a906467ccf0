"""The config applier as `nixie serve` runs it, for the unit tier: the real
`Runtime` (appliance/runtime/wiring.py) over a test's store with the parts a test
names (their real keys: which changes touch them), their services and the real
`ConfigApplier` under the real `Supervisor`, and, if asked, serve's heartbeat in
the DB.

The parts' services are the test's stand-ins (how to build one from a config,
how to retune it): the real DHCP server binds port 67 on the LAN interface,
which only the netns tier may do (tests/netns/test_desired_state.py)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from appliance.config.schema import Config
from appliance.runtime.supervisor import Supervisor
from appliance.runtime.wiring import ConfigApplier, Runtime
from appliance.state.db import Store
from appliance.state.status import write_status

APPLY_POLL_SECONDS = 0.05  # serve polls every 0.5 s; the tests need not wait that long
HEARTBEAT_SECONDS = 0.5    # serve beats every 2 s; the web app counts 6 s as running


StandIn = tuple[Callable[[Config], Any], Callable[[Any, Config], bool] | None]  # build, retune


def runtime_with(base: Config, store: Store, **stand_ins: StandIn) -> Runtime:
    """The real Runtime over `store` (the config file `base` ⊕ the stored desired
    state) with only the parts named, e.g. `dhcp=(build, retune)`: each keeps its
    real keys and is built (and retuned: None rebuilds) by the test's stand-in."""
    runtime = Runtime(base, store, health=lambda: {"ok": False, "services": {}})
    real = {p.name: p for p in runtime.parts}
    runtime.parts = [dataclasses.replace(real[name], build=build, retune=retune)
                     for name, (build, retune) in stand_ins.items()]
    return runtime


@contextmanager
def applying(runtime: Runtime, *, heartbeat: bool = False) -> Iterator[Supervisor]:
    """Serve's supervisor running the runtime's services and the config applier;
    with `heartbeat`, serve's status written to the DB as its main loop does.
    Everything is stopped on the way out."""
    sup = Supervisor(runtime.services())
    sup.add(ConfigApplier(runtime, sup, poll=APPLY_POLL_SECONDS))
    runtime.health = sup.health
    stopping = threading.Event()

    def beat() -> None:
        while not stopping.wait(HEARTBEAT_SECONDS):
            write_status(runtime.store, sup.health())

    beating = threading.Thread(target=beat, daemon=True)
    sup.start()
    if heartbeat:
        write_status(runtime.store, sup.health())  # serve's first beat, once its services run
        beating.start()
    try:
        yield sup
    finally:
        stopping.set()
        if beating.is_alive():
            beating.join(2)
        sup.stop(2)
