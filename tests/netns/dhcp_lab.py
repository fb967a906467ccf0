"""A LAN for the DHCP tests: the router's namespace, a client namespace, a veth
between them, and `nixie serve` (DHCP only) running in the router's."""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

from appliance.config.schema import example_config
from appliance.state.status import read_status
from lab.netns import Netns, start_serve, veth
from tests.conftest import ROOT

UDHCPC_SCRIPT = '#!/bin/sh\necho "$1 $ip $interface $lease" >> {out}\n'
DHCLIENT_SCRIPT = '#!/bin/sh\necho "$reason $new_ip_address $interface" >> {out}\n'


class Lan:
    def __init__(self, tmp: Path, *, address: str = "10.77.0.1/24",
                 dhcp_range: tuple[str, str] = ("10.77.0.100", "10.77.0.200"), mode="authoritative",
                 lease_seconds: int = 600, **dhcp_extra):
        self.tmp = tmp
        self.router = Netns()
        self.client = Netns()
        self.proc: subprocess.Popen | None = None
        veth(self.router, "lan0", self.client, "eth0")
        self.router.run("ip", "addr", "add", address, "dev", "lan0")
        self.ip = address.split("/")[0]
        cfg = example_config(state_dir=str(tmp / "state"), interface="lan0", address=address)
        cfg["dhcp"].update(mode=mode, range=list(dhcp_range), lease_seconds=lease_seconds, **dhcp_extra)
        cfg["dns"]["enable"] = False
        self.config = tmp / "config.json"
        self.config.write_text(json.dumps(cfg))
        self.db = tmp / "state" / "nixie.db"
        self.log = tmp / "serve.log"

    def start(self) -> None:
        """Start serve and wait until DHCP listens and serve reports every service
        ready (worker processes included): a test that times its clients against
        DHCP must not race the start-up of the rest."""
        asked = time.time()
        self.proc = start_serve(self.router, self.config, self.log, mode="a")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = self.status()
            if (status.get("ts", 0) > asked and status.get("ok")
                    and ":67 " in self.router.run("ss", "-Huln").stdout + " "):
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError("dhcp did not start:\n" + self.log.read_text())

    def stop(self, sig: str = "TERM") -> None:
        if self.proc is not None and self.proc.poll() is None:
            if sig == "KILL":
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)

    def close(self) -> None:
        try:
            self.stop("KILL")
        finally:
            self.client.close()
            self.router.close()

    # -- clients ------------------------------------------------------------
    def script(self, name: str, template: str) -> tuple[Path, Path]:
        out = self.tmp / f"{name}.out"
        sc = self.tmp / f"{name}.sh"
        sc.write_text(template.format(out=out))
        sc.chmod(0o755)
        return sc, out

    def dhclient(self, iface: str = "eth0", *, name: str = "dhclient", timeout: float = 30
                 ) -> list[str]:
        sc, out = self.script(name, DHCLIENT_SCRIPT)
        self.client.run("timeout", str(timeout), "dhclient", "-1", "-sf", str(sc),
                        "-lf", str(self.tmp / f"{name}.leases"), "-pf", str(self.tmp / f"{name}.pid"),
                        iface, timeout=timeout + 5)
        return out.read_text().split("\n") if out.exists() else []

    def udhcpc(self, iface: str = "eth0", *, name: str = "udhcpc", args: tuple[str, ...] = ()
               ) -> subprocess.CompletedProcess:
        sc, _ = self.script(name, UDHCPC_SCRIPT)
        return self.client.run("udhcpc", "-i", iface, "-n", "-q", "-f", "-t", "5", "-T", "1",
                               "-s", str(sc), *args, check=False, timeout=40)

    def mac(self, iface: str = "eth0") -> str:
        return self.client.run(
            "cat", f"/sys/class/net/{iface}/address").stdout.strip()

    # -- state ----------------------------------------------------------------
    def leases(self) -> dict[str, dict]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return {r["ip"]: dict(r) for r in conn.execute("SELECT * FROM leases")}
        finally:
            conn.close()

    def status(self) -> dict:
        """serve's last status heartbeat ({} before the first)."""
        if not self.db.exists():
            return {}
        conn = sqlite3.connect(self.db)
        try:
            return read_status(conn) or {}
        except sqlite3.OperationalError:  # no tables yet: serve is migrating
            return {}
        finally:
            conn.close()

    def dhcp_stats(self, timeout: float = 6) -> dict:
        """The DHCP service's counters, from the first status heartbeat serve writes
        after this call (so they count everything sent before it)."""
        asked = time.time()
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.get("ts", 0) > asked:
                st = status["services"]["dhcp"].get("stats")
                if st or time.monotonic() > deadline:
                    return st or {}
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.3)


def in_range(ip: str | None, first: str, last: str) -> bool:
    """`ip` is an address from `first` to `last` (None, no address, is not)."""
    if ip is None:
        return False
    a = ipaddress.IPv4Address(ip)
    return ipaddress.IPv4Address(first) <= a <= ipaddress.IPv4Address(last)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}
