"""Service `reboot-after-build`: boots a host from the network once its build queued with
reboot-after has succeeded ("rebuild and reboot").

The build worker (appliance/nix) may not import the power actions (appliance/router);
this watcher, in the runtime that composes both, sees the marked builds finish and calls
`appliance.router.bmc.flows.reboot_finished_builds`, which hands each build out once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from appliance.router.bmc.flows import reboot_finished_builds
from appliance.state.db import Store

log = logging.getLogger("nixie.reboot")


class RebootAfterBuildWatcher:
    name = "reboot-after-build"

    def __init__(self, store: Store, interface: str | None, poll: float = 1.0):
        self.store = store
        self.interface = interface
        self.poll = poll
        self.rebooted = 0
        self.skipped = 0

    def check_once(self) -> None:
        for r in reboot_finished_builds(self.store.conn(), interface=self.interface):
            if r.outcome is not None:
                self.rebooted += 1
            else:
                self.skipped += 1

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.poll):
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - a locked DB or a bug must not stop the watch
                log.warning("reboot after build failed", exc_info=True)

    def stats(self) -> dict[str, Any]:
        return {"rebooted": self.rebooted, "skipped": self.skipped}
