"""LAN DNS over IPv6, through a real `nixie serve`, asked by dig from namespaces.

The router serves IPv6 on the LAN (router advertisements are on by default) and its
DNS listeners are left to the default: it listens on the LAN's IPv4 address and on its
LAN IPv6 address, nowhere else. A LAN client asks over IPv6: AAAA for a host's DHCPv6
reservation, for a host's DHCPv6 lease (by its MAC), for a DHCPv6 client's hostname
and for the router's own name; ip6.arpa PTR for them; NXDOMAIN inside the prefix.
A client outside the LAN prefix (routed in from the WAN) is refused. The limits hold
over IPv6: a malformed datagram is counted and dropped, and ten addresses holding
TCP connections do not lock out a LAN client (8 connections per client address).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from appliance.config.schema import example_config
from appliance.domain import hosts
from appliance.state.db import Store
from lab.netns import serving
from netservices.dns.server import MAX_TCP_CLIENTS
from netservices.dns.zone import clean_hostname
from tests.conftest import wait_for
from tests.dhcp6_helpers import put_lease6
from tests.netns.routerlab import RouterLab
from tests.netns.test_dns_hostile import answers, dig, dns_stats

PREFIX = "fd77:6e69:7869::"
ROUTER6 = PREFIX + "1"
CLIENT6 = PREFIX + "50"
ATTACKERS6 = [f"{PREFIX}{0x60 + i:x}" for i in range(10)]
WAN6 = "2001:db8:77::53"


@pytest.fixture
def lab(tmp_path):
    lab = RouterLab()  # router lan0 10.77.0.1 -- client 10.77.0.50; wan0 -- the WAN host
    try:
        router, client, wan = lab.router, lab.client, lab.wan
        router.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        router.run("ip", "-6", "addr", "add", "2001:db8:77::1/64", "dev", "wan0", "nodad")
        for a in [CLIENT6, *ATTACKERS6]:
            client.run("ip", "-6", "addr", "add", f"{a}/64", "dev", "eth0", "nodad")
        wan.run("ip", "-6", "addr", "add", f"{WAN6}/64", "dev", "eth0", "nodad")
        wan.run("ip", "-6", "route", "add", f"{PREFIX}/64", "via", "2001:db8:77::1")

        state = tmp_path / "state"
        store = Store(state / "nixie.db")
        conn = store.conn()
        h = hosts.add_host(conn, "node1", ["bc:24:11:00:00:01"], "github:me/infra")
        hosts.set_state(conn, h["id"], "booted", ip="10.77.0.5")
        conn.execute("UPDATE hosts SET ip6_reservation = ? WHERE id = ?", (PREFIX + "5", h["id"]))
        hosts.add_host(conn, "node3", ["bc:24:11:00:00:03"], "github:me/infra")
        t = time.time()
        for addr, mac, name in ((PREFIX + "1:3", "bc:24:11:00:00:03", None),
                                (PREFIX + "1:7", "02:00:00:00:00:07", "laptop6")):
            put_lease6(conn, addr, mac, hostname=name, starts=t, expires=t + 3600)
        store.close()

        cfg = example_config(state_dir=str(state), interface="lan0")
        cfg["lan"]["address6"] = f"{ROUTER6}/64"
        cfg["dhcp"]["mode"] = "off"
        cfg["dns"] = {"enable": True, "listen": None, "upstream": []}  # default listeners
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        with serving(router, path, tmp_path / "serve.log", [("10.77.0.1", 53)]):
            assert wait_for(lambda: "status: NOERROR" in dig(client, f"@{ROUTER6}",
                                                             "node1.lab.nixie", "AAAA"),
                            timeout=15, every=0.3), (tmp_path / "serve.log").read_text()[-2000:]
            yield router, client, wan, tmp_path
    finally:
        lab.close()


def test_aaaa_and_ip6_arpa_ptr_over_ipv6_on_the_default_listeners(lab):
    router, client, wan, tmp = lab
    at = f"@{ROUTER6}"
    listening = sorted(line.split()[3] for line in router.run("ss", "-Hlnu").stdout.splitlines()
                       if line.split()[3].endswith(":53"))
    assert listening == ["10.77.0.1:53", f"[{ROUTER6}]:53"], listening

    assert answers(client, at, "node1.lab.nixie", "AAAA") == [PREFIX + "5"]  # reservation
    assert answers(client, at, "node1.lab.nixie", "A") == ["10.77.0.5"]  # A over IPv6 too
    assert answers(client, at, "node3.lab.nixie", "AAAA") == [PREFIX + "1:3"]  # its MAC's lease
    assert answers(client, at, "laptop6.lab.nixie", "AAAA") == [PREFIX + "1:7"]  # DHCPv6 hostname
    router_name = clean_hostname(socket.gethostname())
    assert answers(client, at, f"{router_name}.lab.nixie", "AAAA") == [ROUTER6]
    assert answers(client, "@10.77.0.1", "node1.lab.nixie", "AAAA") == [PREFIX + "5"]
    for addr, name in ((PREFIX + "5", "node1"), (PREFIX + "1:3", "node3"),
                       (PREFIX + "1:7", "laptop6")):
        assert answers(client, at, "-x", addr) == [f"{name}.lab.nixie."], addr
    full = dig(client, at, "-x", PREFIX + "99")
    assert "status: NXDOMAIN" in full and "flags: qr aa" in full
    assert "status: NXDOMAIN" in dig(client, at, "nobody.lab.nixie", "AAAA")

    # outside the LAN prefix: refused, nothing answered
    out = dig(wan, at, "node1.lab.nixie", "AAAA")
    assert "status: REFUSED" in out and PREFIX + "5" not in out


def test_limits_hold_over_ipv6(lab):
    router, client, wan, tmp = lab
    at = f"@{ROUTER6}"
    db = tmp / "state" / "nixie.db"
    before = dns_stats(db, time.time())["malformed"]
    junk = ("import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            f"[s.sendto(b'\\x12\\x34' + bytes(range(256)) * 4, ({ROUTER6!r}, 53)) for _ in range(50)]")
    client.run(sys.executable, "-c", junk)
    assert answers(client, at, "node1.lab.nixie", "AAAA") == [PREFIX + "5"]
    assert dns_stats(db, time.time())["malformed"] >= before + 50

    holder = client.popen(sys.executable, "-m", "tests.netns.dns_fakes", "tcp-holder",
                          ROUTER6, "20", *ATTACKERS6, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for _ in range(3):
            full = dig(client, at, "+tcp", "-b", CLIENT6, "node1.lab.nixie", "AAAA")
            assert PREFIX + "5" in full and "status: NOERROR" in full, full
        stats = dns_stats(db, time.time())
        assert stats["tcp_refused_per_client"] > 0 and stats["tcp_clients"] <= MAX_TCP_CLIENTS
    finally:
        holder.kill()
        holder.wait()
