"""Real DHCP clients (dhclient, udhcpc) against `nixie serve` in namespaces."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import run_nixie
from tests.netns.dhcp_lab import Lan, in_range


@pytest.fixture
def lan(tmp_path):
    lan = Lan(tmp_path)
    try:
        yield lan
    finally:
        lan.close()


def test_dhclient_and_udhcpc_get_renew_and_keep_addresses(lan):
    lan.start()
    lines = lan.dhclient()
    bound = [ln.split() for ln in lines if ln.startswith("BOUND")]
    assert bound, lines
    ip = bound[0][1]
    assert in_range(ip, "10.77.0.100", "10.77.0.200")
    mac = lan.mac()
    row = lan.leases()[ip]
    assert row["mac"] == mac and row["state"] == "bound" and row["expires"] > time.time() + 500
    # dhclient again: INIT-REBOOT with the remembered lease, same address
    lines = lan.dhclient()
    assert any(ln.split()[:2] == ["REBOOT", ip] for ln in lines), lines

    # udhcpc on a second interface (its own MAC, client id 01+MAC)
    lan.client.run("ip", "link", "add", "mv1", "link", "eth0", "type", "macvlan", "mode", "bridge")
    lan.client.run("ip", "link", "set", "mv1", "up")
    sc, out = lan.script("udhcpc-renew", "#!/bin/sh\necho \"$1 $ip\" >> {out}\n"
                         "[ \"$1\" = bound ] && ip addr add $ip/24 dev $interface\nexit 0\n")
    p = lan.client.popen("udhcpc", "-i", "mv1", "-f", "-s", str(sc), "-t", "5", "-T", "1")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (out.exists() and "bound" in out.read_text()):
            time.sleep(0.1)
        uip = [ln.split()[1] for ln in out.read_text().splitlines() if ln.startswith("bound")][0]
        assert uip != ip and in_range(uip, "10.77.0.100", "10.77.0.200")
        before = lan.leases()[uip]["expires"]
        time.sleep(1.1)
        p.send_signal(signal.SIGUSR1)  # renew now (unicast, ciaddr set)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "renew" not in out.read_text():
            time.sleep(0.1)
        assert f"renew {uip}" in out.read_text().splitlines(), out.read_text()
        assert lan.leases()[uip]["expires"] > before
    finally:
        p.terminate()
        p.wait(5)
    stats = lan.dhcp_stats()
    assert stats["received"]["discover"] >= 2 and stats["sent"]["ack"] >= 4


def test_reservation_is_honoured(lan):
    mac = lan.mac()
    r = run_nixie("host", "add", "node1", "--mac", mac, "--flake", "github:me/infra",
                  "--ip", "10.77.0.42", config=lan.config)
    assert r.returncode == 0, r.stderr
    r = run_nixie("host", "add", "node2", "--mac", "52:54:00:12:34:56", "--flake", "github:me/infra",
                  "--ip", "10.99.0.1", config=lan.config)
    assert r.returncode != 0 and "not a host address of the LAN" in r.stderr
    lan.start()
    lines = lan.dhclient()
    assert any(ln.split()[:2] == ["BOUND", "10.77.0.42"] for ln in lines), lines
    assert lan.leases()["10.77.0.42"]["mac"] == mac


def test_garbage_is_counted_and_the_server_keeps_answering(lan):
    lan.start()
    lan.client.run("ip", "addr", "add", "10.77.0.250/24", "dev", "eth0")
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "for p in [b'', b'x'*10, b'\\x01'*239, b'\\x01'*300, bytes(236)+b'\\x63\\x82\\x53\\x63\\x0c\\x30ab']:\n"
            "    s.sendto(p,(sys.argv[1],67))\n")
    lan.client.run(sys.executable, "-c", code, lan.ip)
    lan.client.run("ip", "addr", "flush", "dev", "eth0")
    lines = lan.dhclient()
    assert any(ln.startswith("BOUND") for ln in lines), lines
    deadline = time.monotonic() + 8
    while True:
        st = lan.dhcp_stats()
        if st.get("dropped", {}).get("malformed", 0) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert st["dropped"]["malformed"] == 5, st
    assert "Traceback" not in lan.log.read_text()


def test_two_hundred_clients_get_two_hundred_addresses(tmp_path):
    lan = Lan(tmp_path, address="10.78.0.1/23", dhcp_range=("10.78.0.10", "10.78.1.250"))
    try:
        lan.start()
        n = 200
        for i in range(n):
            lan.client.run("ip", "link", "add", f"m{i}", "link", "eth0", "type", "macvlan", "mode", "bridge")
            lan.client.run("ip", "link", "set", f"m{i}", "up")
        sc, out = lan.script("many", "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$interface $ip\" >> {out}\nexit 0\n")
        procs = []
        for i in range(n):
            procs.append(lan.client.popen("udhcpc", "-i", f"m{i}", "-n", "-q", "-f", "-t", "6", "-T", "2",
                                          "-s", str(sc), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait(60)
        got = dict(ln.split() for ln in out.read_text().splitlines())
        assert len(got) == n, f"{len(got)} of {n} clients bound"
        assert len(set(got.values())) == n
        assert all(in_range(ip, "10.78.0.10", "10.78.1.250") for ip in got.values())
        leases = lan.leases()
        assert set(got.values()) <= set(leases)
        macs = {lan.mac(f"m{i}"): f"m{i}" for i in range(n)}
        for ip in got.values():
            assert got[macs[leases[ip]["mac"]]] == ip
    finally:
        lan.close()


def test_only_port_67_on_the_lan_interface(lan):
    lan.start()
    udp = lan.router.run("ss", "-Hulpn").stdout.strip().splitlines()
    dhcp = [ln.split()[3] for ln in udp if "67" in ln.split()[3]]
    assert dhcp == ["0.0.0.0%lan0:67"], udp


def test_conflict_check_skips_an_address_in_use(tmp_path):
    lan = Lan(tmp_path, dhcp_range=("10.77.0.100", "10.77.0.110"), conflict_check=True)
    try:
        # a machine squatting on the first pool address, unknown to the server
        lan.client.run("ip", "link", "add", "squat", "link", "eth0", "type", "macvlan", "mode", "bridge")
        lan.client.run("ip", "addr", "add", "10.77.0.100/24", "dev", "squat")
        lan.client.run("ip", "link", "set", "squat", "up")
        lan.start()
        lines = lan.dhclient()
        bound = [ln.split()[1] for ln in lines if ln.startswith("BOUND")]
        assert bound and bound[0] != "10.77.0.100", lines
        assert in_range(bound[0], "10.77.0.101", "10.77.0.110")
        assert lan.leases()["10.77.0.100"]["state"] == "declined"
        c = sqlite3.connect(lan.db)
        kinds = [k for (k,) in c.execute("SELECT kind FROM events WHERE ip = '10.77.0.100'")]
        c.close()
        assert kinds == ["dhcp.conflict"]
    finally:
        lan.close()
