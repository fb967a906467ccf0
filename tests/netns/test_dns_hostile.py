"""Findings 4, 6 and 11 (DNS-over-TCP) of issue 15 against the real `nixie serve` in
namespaces:

- DHCP clients (real udhcpc) sending the hostnames `db1` (a registered host), `wpad`
  and the router's own name get none of them in DNS; one sending `laptop` does;
- a forging upstream (it sees each query, so knows its ID and port) sends wrong
  answers before the real one: `dig` still gets the real one, and the queries left
  from different source ports;
- ten addresses holding every idle DNS-over-TCP connection they can do not lock
  `dig +tcp` from another address out."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from appliance.config.schema import example_config
from appliance.domain import hosts
from appliance.state.db import Store
from appliance.state.status import read_status
from lab.netns import Netns, serving, stop_processes, veth
from netservices.dns.server import MAX_TCP_CLIENTS
from netservices.dns.zone import clean_hostname

ATTACKERS = [f"10.77.0.{60 + i}" for i in range(10)]


def dns_stats(db, after: float) -> dict:
    """The DNS service's counters from the first serve heartbeat written after `after`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db)
        try:
            status = read_status(conn) or {}
        finally:
            conn.close()
        if status.get("ts", 0) > after:
            return status["services"]["dns"]["stats"]
        time.sleep(0.3)
    raise AssertionError("no heartbeat")


def dig(ns, *args):
    return ns.run("dig", "+time=2", "+tries=1", *args, check=False).stdout


def answers(ns, *args):
    return sorted(dig(ns, "+short", *args).split())


@pytest.fixture
def lab(tmp_path):
    nss, procs = [], []
    try:
        router, client, wan = Netns(), Netns(), Netns()
        nss += [router, client, wan]
        veth(router, "lan0", client, "eth0")
        veth(router, "wan0", wan, "eth0")
        router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
        router.run("ip", "addr", "add", "192.0.2.1/24", "dev", "wan0")
        client.run("ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
        for a in ATTACKERS:
            client.run("ip", "addr", "add", f"{a}/24", "dev", "eth0")
        wan.run("ip", "addr", "add", "192.0.2.53/24", "dev", "eth0")
        wan.run("ip", "addr", "add", "192.0.2.66/24", "dev", "eth0")
        qlog = tmp_path / "upstream.jsonl"
        procs.append(wan.popen(sys.executable, "-m", "tests.netns.dns_fakes", "upstream",
                               str(qlog), "192.0.2.53", "192.0.2.66",
                               stdout=subprocess.DEVNULL))

        state = tmp_path / "state"
        store = Store(state / "nixie.db")
        h = hosts.add_host(store.conn(), "db1", ["bc:24:11:00:00:01"], "github:me/infra")
        hosts.set_state(store.conn(), h["id"], "booted", ip="10.77.0.5")
        store.close()
        cfg = example_config(state_dir=str(state), interface="lan0")
        cfg["dhcp"].update(mode="authoritative", range=["10.77.0.100", "10.77.0.150"])
        cfg["dns"] = {"enable": True, "listen": ["10.77.0.1:53"], "upstream": ["192.0.2.53"]}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        with serving(router, path, tmp_path / "serve.log", [("10.77.0.1", 53)]):
            yield router, client, qlog, tmp_path
    finally:
        stop_processes(procs)
        for ns in nss:
            ns.close()


def test_dhcp_clients_cannot_claim_taken_or_reserved_names(lab):
    router, client, _, tmp = lab
    at = "@10.77.0.1"
    router_name = clean_hostname(socket.gethostname())
    script = tmp / "udhcpc.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    for i, name in enumerate(["db1", "wpad", router_name, "laptop"]):
        client.run("ip", "link", "add", f"m{i}", "link", "eth0", "type", "macvlan", "mode",
                   "bridge")
        client.run("ip", "link", "set", f"m{i}", "up")
        r = client.run("udhcpc", "-i", f"m{i}", "-n", "-q", "-f", "-t", "5", "-T", "1",
                       "-s", str(script), "-x", f"hostname:{name}", check=False, timeout=40)
        assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 15  # the zone is rebuilt every 2 s
    while time.monotonic() < deadline and not answers(client, at, "laptop.lab.nixie"):
        time.sleep(0.3)
    laptop = answers(client, at, "laptop.lab.nixie")
    assert len(laptop) == 1 and laptop[0].startswith("10.77.0.1")  # its lease, .100-.150
    assert answers(client, at, "db1.lab.nixie") == ["10.77.0.5"]  # only the registered host
    assert "status: NXDOMAIN" in dig(client, at, "wpad.lab.nixie")
    assert answers(client, at, f"{router_name}.lab.nixie") == ["10.77.0.1"]


def test_forged_upstream_replies_do_not_replace_the_real_answer(lab):
    router, client, qlog, _ = lab
    at = "@10.77.0.1"
    for i in range(8):
        assert answers(client, at, f"www{i}.example.org") == ["192.0.2.80"]
    seen = [json.loads(line) for line in qlog.read_text().splitlines()]
    assert len(seen) == 8
    assert len({q["port"] for q in seen}) == 8, seen  # a source port per query


def test_idle_tcp_connections_do_not_lock_out_dig(lab):
    router, client, _, tmp = lab
    state_db = tmp / "state" / "nixie.db"
    at = "@10.77.0.1"
    holder = client.popen(sys.executable, "-m", "tests.netns.dns_fakes", "tcp-holder",
                          "10.77.0.1", "20", *ATTACKERS, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for _ in range(3):
            full = dig(client, at, "+tcp", "-b", "10.77.0.50", "db1.lab.nixie")
            assert "10.77.0.5" in full and "status: NOERROR" in full, full
        stats = dns_stats(state_db, time.time())
        assert stats["tcp_refused_per_client"] > 0 and stats["tcp_clients"] <= MAX_TCP_CLIENTS
    finally:
        holder.kill()
        holder.wait()
