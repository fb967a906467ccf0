"""Service `bmc`: asks every host's BMC for its power state every `bmc.poll_seconds`."""

from __future__ import annotations

import logging
import threading
from typing import Any

from appliance.state.db import Store

from .power import poll_power

log = logging.getLogger("nixie.bmc")


class PowerPoller:
    name = "bmc"

    def __init__(self, store: Store, interval: float):
        self.store = store
        self.interval = interval
        self.polls = 0
        self.failures = 0

    def poll_once(self) -> dict[str, str | None]:
        states = poll_power(self.store.conn())
        self.polls += 1
        self.failures += sum(1 for s in states.values() if s is None)
        return states

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a locked DB or a bug must not stop the poll
                log.warning("BMC power poll failed", exc_info=True)
            if stop.wait(self.interval):
                return

    def stats(self) -> dict[str, Any]:
        return {"interval": self.interval, "polls": self.polls, "failures": self.failures}
