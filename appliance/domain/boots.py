"""Boots read back from the event log: a host's boot is its events from the firmware's
DHCP request to the agent's `booted` (or `installed`, or `failed`) report. Each step's
duration is the time from the step before it; a boot that ended with an error, or that
went quiet for STUCK_SECONDS, stopped at its last step, and `hint` says what usually
causes that, naming the section of docs/troubleshooting.md to read.

The dashboard's charts, the host timeline and /metrics all read boots through here."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from appliance.domain.machines import firmware_of

# event kind -> step name, in boot order
STEPS = {"boot.dhcp": "dhcp", "boot.tftp": "tftp", "boot.ipxe": "ipxe", "boot.script": "script",
         "boot.kernel": "kernel", "boot.initrd": "initrd", "host.booting": "booting",
         "host.installing": "installing", "host.booted": "booted", "host.installed": "installed",
         "host.failed": "failed"}
ORDER = list(dict.fromkeys(STEPS.values()))
END = {"booted", "installed", "failed"}
KERNEL_ON = ORDER.index("kernel")
# a boot starts with the firmware's DHCP request, or later for a machine that starts
# iPXE by itself (a USB stick, a NIC ROM with an embedded script, a proxy elsewhere)
STARTS = ("dhcp", "tftp", "ipxe", "script")
STUCK_SECONDS = 600.0  # a boot with no event for this long stopped where it was
TROUBLESHOOTING = "docs/troubleshooting.md"

# the step a boot stopped after (or failed at) -> (what it means, the section to read)
HINTS = {
    "dhcp": ("stopped after DHCP: the firmware got an address but never fetched iPXE "
             "(TFTP blocked, or another DHCP server answered with its own boot file)", "TFTP"),
    "tftp": ("stopped after TFTP: the firmware could not load iPXE "
             "(Secure Boot on, or the wrong boot mode)", "TFTP"),
    "ipxe": ("stopped after the iPXE download: the firmware could not start iPXE "
             "(Secure Boot on, or the wrong boot mode)", "TFTP"),
    "script": ("stopped after the boot script: iPXE did not fetch the kernel "
               "(no generation built, or the HTTP boot port blocked)", "Boot script"),
    "kernel": ("stopped after the kernel: iPXE did not fetch the initrd", "Kernel and initrd"),
    "initrd": ("stopped after the initrd: the kernel started but the system never reported "
               "(missing initrd= on UEFI, a kernel panic, or no network in stage 1)", "Booting"),
    "booting": ("stopped while booting: stage 2 started but never reported booted "
                "(a failing unit, or the agent cannot reach the router)", "Booting"),
    "installing": ("stopped while installing: the installer never reported installed",
                   "Booting"),
    "failed": ("the agent reported the boot failed", "Booting"),
}
MISSING_HINTS = {
    "kernel": ("the kernel is missing: the generation's boot files are gone or not built — "
               "rebuild the host", "Kernel and initrd"),
    "initrd": ("the initrd is missing: the generation's boot files are gone or not built — "
               "rebuild the host", "Kernel and initrd"),
}


@dataclass
class Step:
    name: str
    ts: float
    seconds: float | None  # since the step before it (None for the first)
    level: str = "info"
    message: str = ""


@dataclass
class Boot:
    host_id: int
    host: str | None
    firmware: str | None
    started: float
    steps: list[Step] = field(default_factory=list)
    outcome: str = "running"  # running | booted | installed | failed | stopped
    hint: str | None = None
    section: str | None = None  # of docs/troubleshooting.md

    @property
    def last(self) -> Step:
        return self.steps[-1]

    @property
    def seconds(self) -> float | None:
        """Power-on (the first DHCP request) to the end, for a boot that ended."""
        return self.last.ts - self.started if self.outcome in END else None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "firmware": self.firmware, "started": self.started,
                "outcome": self.outcome, "seconds": self.seconds, "hint": self.hint,
                "section": self.section,
                "steps": [{"name": s.name, "ts": s.ts, "seconds": s.seconds, "level": s.level,
                           "message": s.message} for s in self.steps]}


def anchor(section: str) -> str:
    """The GitHub-style anchor of a heading of docs/troubleshooting.md."""
    return "".join(c for c in section.lower().replace(" ", "-") if c.isalnum() or c == "-")


def _firmware(data: dict) -> str | None:
    """The firmware a DHCP event's client architecture (`arch`) names."""
    arch = data.get("arch")
    return firmware_of(arch if isinstance(arch, int) else None)


def _new_boot(row, data: dict) -> Boot:
    return Boot(row["host_id"], row["host"], _firmware(data), row["ts"])


def _add(boot: Boot, name: str, row) -> None:
    """The first event of each step counts; an error of a step already seen is kept too."""
    seen = {s.name for s in boot.steps}
    if name in seen and row["level"] not in ("warning", "error"):
        return
    prev = boot.steps[-1].ts if boot.steps else boot.started
    boot.steps.append(Step(name, row["ts"], row["ts"] - prev if boot.steps else None,
                           row["level"], row["message"]))


def _close(boot: Boot, now: float) -> None:
    last = boot.last
    if last.name in ("booted", "installed"):
        boot.outcome = last.name
        return
    if last.name == "failed":
        boot.outcome = "failed"
    elif last.level == "error" or now - last.ts > STUCK_SECONDS:
        boot.outcome = "stopped"
    else:
        return
    missing = last.level == "error" and last.name in MISSING_HINTS
    if last.level == "error" and not missing and last.name != "failed":
        good = [s for s in boot.steps if s.level != "error"]
        last = good[-1] if good else last
    boot.hint, boot.section = (MISSING_HINTS if missing else HINTS).get(
        last.name, HINTS["dhcp"])


def _starts_new(boot: Boot | None, name: str, ts: float) -> bool:
    if boot is None or boot.outcome != "running":
        return name in STARTS
    if name not in STARTS:
        return False
    reached = max(ORDER.index(s.name) for s in boot.steps)
    return reached >= KERNEL_ON or ts - boot.last.ts > STUCK_SECONDS


def from_events(rows, now: float) -> list[Boot]:
    """Boots from event rows (ts, kind, level, message, host_id, host, data), oldest
    first, of any number of hosts. A step before the kernel after the kernel was
    fetched (a DHCP request, a script) is the next boot: the last one stopped."""
    open_: dict[int, Boot] = {}
    out: list[Boot] = []
    for row in rows:
        name = STEPS.get(row["kind"])
        hid = row["host_id"]
        if name is None or hid is None:
            continue
        data = row["data"]
        data = json.loads(data) if isinstance(data, str) and data else (data or {})
        if name in ("kernel", "initrd") and data.get("status") == "started":
            continue  # the transfer's end is the step ("sent", or an error)
        boot = open_.get(hid)
        if _starts_new(boot, name, row["ts"]):
            if boot is not None and boot.outcome == "running":
                boot.outcome = "stopped"
                _close_stopped(boot)
            boot = open_[hid] = _new_boot(row, data)
            out.append(boot)
        elif boot is None or boot.outcome != "running":
            continue  # a report with no boot before it (e.g. a local boot)
        if boot.firmware is None and name == "dhcp":
            boot.firmware = _firmware(data)
        _add(boot, name, row)
        if name in END or boot.last.level == "error":
            _close(boot, now)
    for boot in open_.values():
        if boot.outcome == "running":
            _close(boot, now)
    return out


def _close_stopped(boot: Boot) -> None:
    """A boot another boot of the same host replaced before it ended."""
    boot.hint, boot.section = HINTS.get(boot.last.name, HINTS["dhcp"])


_COLUMNS = ("SELECT e.ts, e.kind, e.level, e.message, e.host_id, h.name AS host, e.data "
            "FROM events e LEFT JOIN hosts h ON h.id = e.host_id ")
_KINDS = ",".join("?" * len(STEPS))


def of_host(conn: sqlite3.Connection, host_id: int, now: float, limit: int = 10) -> list[Boot]:
    """A host's last `limit` boots, newest first."""
    rows = conn.execute(_COLUMNS + f"WHERE e.host_id = ? AND e.kind IN ({_KINDS}) "
                        "ORDER BY e.id DESC LIMIT 2000", (host_id, *STEPS)).fetchall()
    return from_events(reversed(rows), now)[::-1][:limit]


def since(conn: sqlite3.Connection, ts: float, now: float) -> list[Boot]:
    """Every host's boots with events after `ts`, oldest first."""
    rows = conn.execute(_COLUMNS + f"WHERE e.ts >= ? AND e.host_id IS NOT NULL AND e.kind IN "
                        f"({_KINDS}) ORDER BY e.id", (ts, *STEPS)).fetchall()
    return from_events(rows, now)
