"""The DHCP LAN (`dhcp_lab.Lan`) with IPv6 on: router advertisements and DHCPv6
served by `nixie serve`, and the real IPv6 clients (dhclient -6, rdisc6)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from lab.netns import stop_processes
from tests.netns.dhcp_lab import Lan

# what dhclient-script does with an address (put it on the interface), then a line to read
DHCLIENT6_SCRIPT = """#!/bin/sh
case "$reason" in BOUND6|RENEW6|REBIND6|REBOOT6)
  [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" \\
    dev "$interface" nodad ;;
esac
echo "$reason $new_ip6_address $new_dhcp6_name_servers $new_dhcp6_domain_search" >> {out}
"""


class Lan6(Lan):
    def __init__(self, tmp: Path, *, address6: str | None = "fd00:77::1/64",
                 dhcp6: dict | None = None, ra: dict | None = None, **kw):
        super().__init__(tmp, **kw)
        cfg = json.loads(self.config.read_text())
        cfg["lan"]["address6"] = address6
        cfg["dhcp6"] = {"mode": "stateful", **(dhcp6 or {})}
        cfg["ra"] = {"enable": True, **(ra or {})}
        self.config.write_text(json.dumps(cfg))
        self.clients: list[subprocess.Popen] = []
        # no duplicate address detection on the client's link-local address: dhclient
        # cannot bind a tentative one
        self.client.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        self.client.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=2")
        self.client.run("ip", "link", "set", "eth0", "down")
        self.client.run("ip", "link", "set", "eth0", "up")

    def start(self, *, dhcp6: bool = True) -> None:
        """Start serve; with `dhcp6`, wait until DHCPv6 listens too."""
        super().start()
        if dhcp6:
            self.wait_dhcp6()

    def dhcp6_listens(self) -> bool:
        return ":547 " in self.router.run("ss", "-Huln").stdout.replace("\n", " ") + " "

    def wait_dhcp6(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dhcp6_listens():
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError("dhcp6 did not start:\n" + self.log.read_text())

    def close(self) -> None:
        try:
            stop_processes(self.clients, timeout=5)
        finally:
            super().close()

    def dhclient6(self, *args: str, name: str = "dhclient6", iface: str = "eth0"
                  ) -> tuple[subprocess.Popen, Path]:
        """dhclient -6 in the foreground (-d), as a process; its script's lines go to
        the returned file: "REASON address nameservers domains"."""
        sc, out = self.script(name, DHCLIENT6_SCRIPT)
        p = self.client.popen("dhclient", "-6", "-d", *args, "-sf", str(sc),
                              "-lf", str(self.tmp / f"{name}.leases"),
                              "-pf", str(self.tmp / f"{name}.pid"), iface,
                              stdout=open(self.tmp / f"{name}.log", "a"),
                              stderr=subprocess.STDOUT)
        self.clients.append(p)
        return p, out

    def wait_line(self, out: Path, reason: str | tuple[str, ...], timeout: float, after: int = 0
                  ) -> list[str]:
        """The first script line with `reason` (or one of them) after the first `after`
        lines."""
        reasons = (reason,) if isinstance(reason, str) else reason
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = out.read_text().splitlines() if out.exists() else []
            for ln in lines[after:]:
                if ln.split()[:1] and ln.split()[0] in reasons:
                    return ln.split()
            time.sleep(0.2)
        raise AssertionError(f"no {reason} in {timeout} s: "
                             + (out.read_text() if out.exists() else "(no output)"))

    def leases6(self) -> dict[str, dict]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return {r["address"]: dict(r) for r in conn.execute("SELECT * FROM leases6")}
        finally:
            conn.close()

    def setting(self, key: str):
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return json.loads(row[0]) if row else None
        finally:
            conn.close()

    def client_addresses6(self, iface: str = "eth0") -> list[str]:
        out = self.client.run("ip", "-6", "-o", "addr", "show", "dev", iface, "scope", "global")
        return [ln.split()[3] for ln in out.stdout.splitlines()]

    def dhcp6_stats(self, timeout: float = 6) -> dict:
        """The DHCPv6 service's counters from the first heartbeat written after this call."""
        asked = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("ts", 0) > asked:
                return status["services"]["dhcp6"].get("stats") or {}
            time.sleep(0.3)
        return {}
