"""kill -9 under DHCPv6 load: every REPLYed binding is in SQLite, and clients renew
into their own addresses (the IPv6 twin of test_dhcp_kill.py)."""

from __future__ import annotations

import subprocess
import time

from tests.netns.dhcp6_lab import Lan6

N = 24
SCRIPT = ('#!/bin/sh\ncase "$reason" in BOUND6|RENEW6|REBIND6|REBOOT6)'
          ' echo "$reason $interface $new_ip6_address" >> {out} ;; esac\nexit 0\n')


def lines(out) -> list[list[str]]:
    return [ln.split() for ln in out.read_text().splitlines()] if out.exists() else []


def test_kill_9_under_dhcp6_load_loses_no_replied_binding(tmp_path):
    lan = Lan6(tmp_path, dhcp6={"preferred_seconds": 60, "valid_seconds": 600,
                                "rapid_commit": False})
    procs: list[subprocess.Popen] = []
    try:
        c = lan.client
        c.run("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        for i in range(N):
            c.run("ip", "link", "add", f"k{i}", "link", "eth0", "type", "macvlan", "mode", "bridge")
            c.run("ip", "link", "set", f"k{i}", "up")
        macs = {f"k{i}": lan.mac(f"k{i}") for i in range(N)}
        sc, out = lan.script("kill6", SCRIPT)
        lan.start()
        for i in range(N):
            procs.append(c.popen("dhclient", "-6", "-d", "-sf", str(sc),
                                 "-lf", str(tmp_path / f"k{i}.leases"),
                                 "-pf", str(tmp_path / f"k{i}.pid"), f"k{i}",
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while len(lines(out)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        lan.stop("KILL")  # mid-load: some clients bound, others half-way
        replied = {ln[1]: ln[2] for ln in lines(out)}
        assert 4 <= len(replied) < N, len(replied)
        leases = lan.leases6()
        for iface, addr in replied.items():
            assert addr in leases, f"{iface} was REPLYed {addr}, not in SQLite"
            assert leases[addr]["mac"] == macs[iface] and leases[addr]["state"] == "bound"

        lan.start()  # the clients still soliciting get answers from the restarted server
        deadline = time.monotonic() + 90
        while len({ln[1] for ln in lines(out)}) < N and time.monotonic() < deadline:
            time.sleep(0.2)
        first: dict[str, str] = {}
        for _reason, iface, addr in lines(out):
            first.setdefault(iface, addr)
        assert len(first) == N and len(set(first.values())) == N, first

        # another kill -9 and restart; at T1 (30 s) every client renews into its address
        n = len(lines(out))
        lan.stop("KILL")
        lan.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            renewed = {ln[1]: ln[2] for ln in lines(out)[n:] if ln[0] in ("RENEW6", "REBIND6")}
            if len(renewed) == N:
                break
            time.sleep(0.5)
        assert renewed == first, {k: (first[k], renewed.get(k)) for k in first
                                  if renewed.get(k) != first[k]}
        log = lan.log.read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
        lan.close()
