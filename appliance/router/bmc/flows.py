"""The flows that end in a network boot: reinstall a host, and reboot a host once its
build succeeded ("rebuild and reboot"). Both go through `boot_from_network` (the BMC's
one-time PXE boot, else Wake-on-LAN); every step is an event on the host.

The build worker (appliance/nix) knows nothing of power: a build queued with
`reboot_after` leaves a mark (`builds.reboot_after_marks`), and the runtime's watcher
calls `reboot_finished_builds`, which takes each mark whose build ended exactly once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass

from appliance.domain import builds, events, hosts
from appliance.errors import NixieError

from .power import BootOutcome, DriverFactory, boot_from_network, driver_for


def reinstall(conn: sqlite3.Connection, name: str, *, interface: str | None,
              drivers: DriverFactory = driver_for) -> BootOutcome:
    """Put host `name` in install mode (its next network boot runs the installer) and boot
    it from the network now. The mode stays `install` even when the boot fails (the
    admin can power the machine on by hand); that failure raises like `boot_from_network`."""
    host = hosts.get_host(conn, name)
    if host["mode"] != "install":
        hosts.update_host(conn, name, mode="install")
    events.record(conn, "host.reinstall", f"{name}: reinstall asked for; booting the installer",
                  host_id=host["id"], data={"mode_before": host["mode"]})
    try:
        return boot_from_network(conn, name, interface=interface, drivers=drivers)
    except NixieError as e:
        events.record(conn, "host.reinstall_failed",
                      f"{name}: in install mode, but could not boot it: {e}", level="error",
                      host_id=host["id"])
        raise


@dataclass(frozen=True)
class RebootAfterBuild:
    """What became of one build queued with reboot-after."""

    build: int
    host: str
    status: str                       # the build's final status
    outcome: BootOutcome | None       # the boot, when the build succeeded and it went out
    error: str | None = None          # why nothing was booted

    def to_dict(self) -> dict:
        return asdict(self)


def reboot_finished_builds(conn: sqlite3.Connection, *, interface: str | None,
                           drivers: DriverFactory = driver_for) -> list[RebootAfterBuild]:
    """Boot every host whose reboot-after build has finished: succeeded boots it from the
    network (once: the mark is taken in one transaction); failed or cancelled boots
    nothing and says so in an event."""
    out = []
    for b in builds.take_finished_reboots(conn):
        host_id, name = b["host_id"], b["host_name"]
        if b["status"] != "succeeded":
            events.record(conn, "build.reboot_skipped",
                          f"build {b['id']} of {name} {b['status']}: {name} is not rebooted",
                          level="warning", host_id=host_id, data={"build": b["id"]})
            out.append(RebootAfterBuild(b["id"], name, b["status"], None,
                                        f"build {b['status']}"))
            continue
        events.record(conn, "build.reboot", f"build {b['id']} of {name} succeeded: booting "
                      f"{name} from the network", host_id=host_id, data={"build": b["id"]})
        try:
            outcome = boot_from_network(conn, name, interface=interface, drivers=drivers)
        except NixieError as e:
            events.record(conn, "build.reboot_failed",
                          f"build {b['id']} of {name} succeeded, but {name} could not be "
                          f"booted: {e}", level="error", host_id=host_id,
                          data={"build": b["id"]})
            out.append(RebootAfterBuild(b["id"], name, b["status"], None, str(e)))
            continue
        out.append(RebootAfterBuild(b["id"], name, b["status"], outcome))
    return out
