"""Power actions through a host's BMC, each an event; "boot from the network now" with
Wake-on-LAN as the fallback; the power-state poll.

Front ends (CLI `nixie power`, the API, the host page) and the flows (Boot now, stateless
mode's wake-up) call these; the drivers never touch the database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass

from appliance.domain import bmc, events
from appliance.domain.bmc import Credentials
from appliance.errors import InvalidInput, NixieError
from appliance.router import wol

from .driver import OFF, ON, BmcError, PowerDriver
from .ipmi import IpmiDriver
from .redfish import RedfishDriver

ACTIONS = ("status", "on", "off", "cycle", "pxe")
DriverFactory = Callable[[Credentials], PowerDriver]


def driver_for(creds: Credentials) -> PowerDriver:
    if creds.bmc.kind == "ipmi":
        return IpmiDriver(creds)
    if creds.bmc.kind == "redfish":
        return RedfishDriver(creds)
    raise InvalidInput(f"unknown BMC kind {creds.bmc.kind!r}")


@dataclass(frozen=True)
class PowerResult:
    host: str
    action: str
    power_state: str | None    # what the BMC said (status) or what the action asked for
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


_DONE = {"on": "powered on", "off": "powered off", "cycle": "power cycled",
         "pxe": "set to boot from the network once"}


def power_action(conn: sqlite3.Connection, name: str, action: str, *,
                 drivers: DriverFactory = driver_for) -> PowerResult:
    """Run `action` (status, on, off, cycle, pxe) on host `name`'s BMC. Success and failure
    are events on the host; a failure raises BmcError and changes nothing we store but the
    BMC's last error."""
    if action not in ACTIONS:
        raise InvalidInput(f"power action must be one of {', '.join(ACTIONS)}, got {action!r}",
                           field="action")
    creds = bmc.credentials(conn, name)
    b = creds.bmc
    where = f"{b.kind} BMC {b.address}"
    try:
        d = drivers(creds)
        if action == "status":
            state = d.status()
        elif action == "pxe":
            d.set_next_boot_pxe()
            state = None
        else:
            getattr(d, action)()
            state = OFF if action == "off" else ON
    except BmcError as e:
        bmc.record_power(conn, b.host_id, None, str(e))
        events.record(conn, "host.power_failed", f"power {action} through {where} failed: {e}",
                      level="error", host_id=b.host_id,
                      data={"action": action, "reason": e.reason, "kind": b.kind})
        raise
    if state is not None:
        before = bmc.record_power(conn, b.host_id, state, None)
    else:
        before = b.power_state
    if action == "status":
        message = f"power is {state} ({where})"
        if before != state:
            events.record(conn, "host.power_state", f"{name} {message}", host_id=b.host_id,
                          data={"power_state": state, "before": before})
    else:
        message = f"{_DONE[action]} through {where}"
        events.record(conn, f"host.power_{action}", f"{name} {message}", host_id=b.host_id,
                      data={"kind": b.kind})
    return PowerResult(host=name, action=action, power_state=state, message=message)


@dataclass(frozen=True)
class BootOutcome:
    """How "boot from the network now" reached the host."""

    host: str
    via: str                  # "bmc" or "wol"
    action: str               # "on", "cycle" (BMC) or "magic packet" (Wake-on-LAN)
    message: str
    bmc_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def boot_from_network(conn: sqlite3.Connection, name: str, *, interface: str | None,
                      drivers: DriverFactory = driver_for) -> BootOutcome:
    """Boot host `name` from the network now: through its BMC (next boot PXE once, then
    power on if it is off or power cycle if it runs), else by Wake-on-LAN. A BMC that fails
    is an event and the magic packet goes out anyway; WakeFailed when that fails too."""
    if bmc.get_bmc(conn, name) is not None:
        try:
            power_action(conn, name, "pxe", drivers=drivers)
            state = power_action(conn, name, "status", drivers=drivers).power_state
            action = "cycle" if state == ON else "on"
            r = power_action(conn, name, action, drivers=drivers)
            return BootOutcome(host=name, via="bmc", action=action,
                               message=f"{name}: next boot from the network, {r.message}")
        except (BmcError, NixieError) as e:
            error = str(e)
            host_id = bmc.require_bmc(conn, name).host_id
            events.record(conn, "host.power_fallback",
                          f"BMC of {name} failed ({error}); sending Wake-on-LAN instead",
                          level="warning", host_id=host_id)
    else:
        error = None
    macs = wol.wake_host(conn, name, interface=interface)
    return BootOutcome(host=name, via="wol", action="magic packet",
                       message=f"{name}: Wake-on-LAN sent to {', '.join(macs)}",
                       bmc_error=error)


def poll_power(conn: sqlite3.Connection, *, drivers: DriverFactory = driver_for
               ) -> dict[str, str | None]:
    """Ask every BMC for its power state and store it: host name -> state (None when the
    BMC failed; its error is stored). A change of state is an event (`host.power_state`); a
    failure is one only when the error differs from the last one, so a dead BMC does not
    write an event per poll."""
    out: dict[str, str | None] = {}
    for b in bmc.list_bmcs(conn):
        try:
            creds = bmc.credentials(conn, b.host)
            state = drivers(creds).status()
        except (BmcError, NixieError) as e:
            out[b.host] = None
            if str(e) != b.last_error:
                events.record(conn, "host.power_unknown",
                              f"could not read the power state of {b.host}: {e}",
                              level="warning", host_id=b.host_id)
            bmc.record_power(conn, b.host_id, None, str(e))
            continue
        out[b.host] = state
        before = bmc.record_power(conn, b.host_id, state, None)
        if before != state:
            events.record(conn, "host.power_state", f"{b.host} power is {state}",
                          host_id=b.host_id, data={"power_state": state, "before": before})
    return out
