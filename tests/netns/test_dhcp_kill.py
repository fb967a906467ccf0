"""kill -9 under load: every ACKed lease is in SQLite, and clients keep their addresses."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.netns.dhcp_lab import Lan

N = 60
SCRIPT = ("#!/bin/sh\n"
          "case \"$1\" in bound|renew) echo \"$1 $interface $ip\" >> {out};"
          " ip addr replace $ip/22 dev $interface ;; esac\nexit 0\n")


def bound_lines(out) -> list[list[str]]:
    return [ln.split() for ln in out.read_text().splitlines()] if out.exists() else []


def test_kill_9_under_load_loses_no_acked_lease(tmp_path):
    lan = Lan(tmp_path, address="10.79.0.1/22", dhcp_range=("10.79.0.10", "10.79.3.250"))
    procs: list[subprocess.Popen] = []
    try:
        c = lan.client
        # macvlans share one namespace: each must answer ARP only for its own address
        c.run("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
        for i in range(N):
            c.run("ip", "link", "add", f"k{i}", "link", "eth0", "type", "macvlan", "mode", "bridge")
            c.run("ip", "link", "set", f"k{i}", "up")
        macs = {f"k{i}": lan.mac(f"k{i}") for i in range(N)}
        sc, out = lan.script("kill", SCRIPT)
        lan.start()
        for i in range(N):
            procs.append(c.popen("udhcpc", "-i", f"k{i}", "-f", "-s", str(sc), "-t", "20", "-T", "1",
                                 "-A", "1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while len(bound_lines(out)) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        lan.stop("KILL")  # mid-load: some clients bound, others half-way
        acked_before = {ln[1]: ln[2] for ln in bound_lines(out)}
        assert 10 <= len(acked_before) < N, len(acked_before)
        # every lease a client was ACKed is already in SQLite, with its MAC
        leases = lan.leases()
        for iface, ip in acked_before.items():
            assert ip in leases, f"{iface} was ACKed {ip}, not in SQLite"
            assert leases[ip]["mac"] == macs[iface] and leases[ip]["state"] == "bound"

        lan.start()  # the clients still waiting get answers from the restarted server
        deadline = time.monotonic() + 40
        while len({ln[1] for ln in bound_lines(out)}) < N and time.monotonic() < deadline:
            time.sleep(0.2)
        first = {}
        for _kind, iface, ip in bound_lines(out):
            first.setdefault(iface, ip)
        assert len(first) == N and len(set(first.values())) == N

        # renew (unicast REQUEST with ciaddr) after another kill -9 + restart
        lan.stop("KILL")
        lan.start()
        for p in procs:
            p.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            renewed = {ln[1]: ln[2] for ln in bound_lines(out) if ln[0] == "renew"}
            if len(renewed) == N:
                break
            time.sleep(0.2)
        assert renewed == first, {k: (first[k], renewed.get(k)) for k in first if renewed.get(k) != first[k]}
        log = lan.log.read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
        lan.close()
