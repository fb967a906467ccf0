"""Stateless mode (Nixie's "first machine in the data centre"): `nixie serve
--hosts hosts.json --flake REF` on a laptop next to an existing DHCP server.

The appliance runs with proxy-DHCP and a temporary state dir, imports the
hosts, queues their builds, wakes them, and exits 0 once every listed host
has booted (netboot), or (install) has installed its disk and then booted from
it (`booted` with boot mode `local`); non-zero with a reason when one fails or
the time runs out.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field

from appliance.config.schema import Config, parse_config
from appliance.domain import builds, events, hosts
from appliance.state.db import now

log = logging.getLogger("nixie.stateless")
DONE = {"netboot": "booted", "install": "installed", "local": "booted"}


def waiting_for(h: dict, install: bool) -> str | None:
    """What host `h` still has to do, or None when it is done. An install host is
    done once its system reported `booted` from its disk; `installed` alone is not
    enough, the reboot into the disk must work too."""
    if install:
        if h["state"] == "booted" and h.get("boot_mode") == "local":
            return None
        if h["state"] == "installed":
            return "installed, waiting for its first boot from disk"
        return f"{h['state']}, installing"
    return None if h["state"] == DONE[h["mode"]] else h["state"]


def stateless_config(base: Config, state_dir: str | None = None) -> Config:
    data = base.to_dict()
    data["state_dir"] = state_dir or tempfile.mkdtemp(prefix="nixie-stateless-")
    data["dhcp"]["mode"] = "proxy"
    return parse_config(data, base.path)


@dataclass
class StatelessRun:
    """Watches the listed hosts; `check()` returns an exit code once it is over."""

    names: list[str]
    timeout: float
    install: set[str] = field(default_factory=set)  # hosts listed in install mode
    since: float = field(default_factory=now)  # states reached before the run do not count
    started: float = field(default_factory=time.monotonic)
    reason: str = ""

    def check(self, conn: sqlite3.Connection) -> int | None:
        pending = []
        for name in self.names:
            h = hosts.get_host(conn, name)
            b = builds.list_builds(conn, host_name=name, limit=1)
            if b and b[0]["status"] == "failed":
                first_line = (b[0]["error"] or "").strip().splitlines()[:1]
                self.reason = f"build of {name} failed: {first_line[0] if first_line else ''}"
                return 1
            if (h["state_changed_at"] or 0) < self.since:
                # from an earlier run on the same --state-dir: a failed host is retried,
                # a booted one must boot (or install) again
                pending.append(f"{name} (not seen yet)")
                continue
            if h["state"] == "failed":
                said = events.recent(conn, limit=1, host_id=h["id"], kind="host.failed")
                self.reason = f"host {name} failed" + (f": {said[0]['message']}" if said else "")
                return 1
            waiting = waiting_for(h, name in self.install)
            if waiting is not None:
                pending.append(f"{name} ({waiting})")
        if not pending:
            self.reason = "all hosts done: " + ", ".join(self.names)
            return 0
        if time.monotonic() - self.started > self.timeout:
            self.reason = f"timed out after {self.timeout:.0f} s waiting for " + ", ".join(pending)
            return 1
        return None


def prepare(conn: sqlite3.Connection, hosts_json: str, flake: str | None) -> StatelessRun:
    started = now()
    r = hosts.import_hosts(conn, hosts_json, default_flake=flake, replace=True)
    names = sorted(r["added"] + r["updated"])
    if not names:
        raise ValueError("hosts.json lists no hosts")
    for name in names:
        builds.enqueue(conn, name)
    install = {n for n in names if hosts.get_host(conn, n)["mode"] == "install"}
    return StatelessRun(names=names, timeout=0, install=install, since=started)


def cleanup(cfg: Config) -> None:
    if cfg.state_dir.startswith(tempfile.gettempdir() + "/nixie-stateless-"):
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
