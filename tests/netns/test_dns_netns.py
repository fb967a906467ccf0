"""LAN DNS inside namespaces, through a real `nixie serve`, asked by dig:
A/PTR for a host and a lease, a forward to an upstream dnsmasq, a cached second
answer (upstream counted, then stopped), a forwarded answer too big for UDP: TC over
UDP with the full answer over TCP, and a client outside the LAN refused."""

import json
import subprocess
import time

import pytest

from appliance.config.schema import example_config
from appliance.domain import hosts
from appliance.state.db import Store
from lab.netns import Netns, serving, stop_processes, veth


def dig(ns, *args):
    r = ns.run("dig", "+time=2", "+tries=1", *args, check=False)
    return r.stdout


def answers(ns, *args):
    return sorted(dig(ns, "+short", *args).split())


@pytest.fixture
def lab(tmp_path):
    nss = []
    procs = []
    try:
        router, client, wan = Netns(), Netns(), Netns()
        nss += [router, client, wan]
        veth(router, "lan0", client, "eth0")
        veth(router, "wan0", wan, "eth0")
        router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
        router.run("ip", "addr", "add", "192.0.2.1/24", "dev", "wan0")
        client.run("ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
        wan.run("ip", "addr", "add", "192.0.2.53/24", "dev", "eth0")
        wan.run("ip", "route", "add", "10.77.0.0/24", "via", "192.0.2.1")

        qlog = tmp_path / "dnsmasq.log"
        up = wan.popen("dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--port=53",
                       "--listen-address=192.0.2.53", "--bind-interfaces", "--local-ttl=300",
                       "--host-record=www.example.org,192.0.2.80", "--log-queries",
                       *[f"--host-record=big.example.org,192.0.2.{i}" for i in range(100, 140)],
                       f"--log-facility={qlog}", "--pid-file=", "--user=root",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(up)

        state = tmp_path / "state"
        store = Store(state / "nixie.db")
        conn = store.conn()
        h = hosts.add_host(conn, "node1", ["bc:24:11:00:00:01"], "github:me/infra")
        hosts.set_state(conn, h["id"], "booted", ip="10.77.0.5")
        t = time.time()
        rows = [("10.77.0.150", "laptop")]
        for ip, name in rows:
            conn.execute("INSERT INTO leases (ip, mac, hostname, state, starts, expires, updated_at)"
                         " VALUES (?, ?, ?, 'bound', ?, ?, ?)",
                         (ip, f"02:00:00:00:01:{int(ip.split('.')[-1]):02x}", name, t, t + 3600, t))
        store.close()

        cfg = example_config(state_dir=str(state), interface="lan0")
        cfg["dhcp"]["mode"] = "off"
        cfg["dns"] = {"enable": True, "listen": ["10.77.0.1:53"], "upstream": ["192.0.2.53"]}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        with serving(router, path, tmp_path / "serve.log", [("10.77.0.1", 53)]):
            yield router, client, wan, up, qlog
    finally:
        stop_processes(procs)
        for ns in nss:
            ns.close()


def test_dns_local_forward_cache_tc_and_refused(lab):
    router, client, wan, up, qlog = lab
    at = "@10.77.0.1"
    assert answers(client, at, "node1.lab.nixie", "A") == ["10.77.0.5"]
    assert answers(client, at, "-x", "10.77.0.5") == ["node1.lab.nixie."]
    assert answers(client, at, "laptop.lab.nixie", "A") == ["10.77.0.150"]
    assert answers(client, at, "-x", "10.77.0.150") == ["laptop.lab.nixie."]
    assert "status: NXDOMAIN" in dig(client, at, "nobody.lab.nixie")
    full = dig(client, at, "node1.lab.nixie")
    assert "flags: qr aa" in full

    # forwarded, then cached: dnsmasq sees the name once
    first = dig(client, at, "www.example.org")
    assert "192.0.2.80" in first and "status: NOERROR" in first
    second = dig(client, at, "www.example.org")
    assert "192.0.2.80" in second
    queries = [line for line in qlog.read_text().splitlines() if "query[A] www.example.org" in line]
    assert len(queries) == 1, qlog.read_text()

    # 40 addresses do not fit 512 bytes: TC over UDP (not cached), everything over TCP
    udp = dig(client, at, "+noedns", "+ignore", "big.example.org")
    assert " tc" in udp.split("flags:")[1].split(";")[0]
    assert len(answers(client, at, "+tcp", "big.example.org")) == 40

    up.terminate()
    up.wait(timeout=5)
    assert answers(client, at, "www.example.org") == ["192.0.2.80"]  # upstream gone, cache answers
    assert "status: SERVFAIL" in dig(client, at, "+time=5", "other.example.org")

    # outside the LAN: refused, no answer
    out = dig(wan, at, "node1.lab.nixie")
    assert "status: REFUSED" in out and "10.77.0.5" not in out
    assert "status: REFUSED" in dig(wan, at, "www.example.org")
