"""Stateless mode (Nixie's "first machine in the data centre"): `nixie serve
--hosts hosts.json --flake REF` on a laptop next to an existing DHCP server.

The appliance runs with proxy-DHCP and a temporary state dir, imports the
hosts, queues their builds, wakes them, and exits 0 once every listed host
has booted (netboot) or installed (install); non-zero with a reason when one
fails or the time runs out.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field

from appliance.config.schema import Config, parse_config
from appliance.domain import builds, hosts

log = logging.getLogger("nixie.stateless")
DONE = {"netboot": "booted", "install": "installed", "local": "booted"}


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
    started: float = field(default_factory=time.monotonic)
    reason: str = ""

    def check(self, conn: sqlite3.Connection) -> int | None:
        pending = []
        for name in self.names:
            h = hosts.get_host(conn, name)
            if h["state"] == "failed":
                self.reason = f"host {name} failed"
                return 1
            b = builds.list_builds(conn, host_name=name, limit=1)
            if b and b[0]["status"] == "failed":
                first_line = (b[0]["error"] or "").strip().splitlines()[:1]
                self.reason = f"build of {name} failed: {first_line[0] if first_line else ''}"
                return 1
            if h["state"] != DONE[h["mode"]]:
                pending.append(f"{name} ({h['state']})")
        if not pending:
            self.reason = "all hosts done: " + ", ".join(self.names)
            return 0
        if time.monotonic() - self.started > self.timeout:
            self.reason = f"timed out after {self.timeout:.0f} s waiting for " + ", ".join(pending)
            return 1
        return None


def prepare(conn: sqlite3.Connection, hosts_json: str, flake: str | None) -> StatelessRun:
    r = hosts.import_hosts(conn, hosts_json, default_flake=flake, replace=True)
    names = r["added"] + r["updated"]
    if not names:
        raise ValueError("hosts.json lists no hosts")
    for name in names:
        builds.enqueue(conn, name)
    return StatelessRun(names=names, timeout=0)


def cleanup(cfg: Config) -> None:
    if cfg.state_dir.startswith(tempfile.gettempdir() + "/nixie-stateless-"):
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
