"""SqliteBackend.host_by_ip: which host a boot fetch from an address is put on (boot.path,
boot.closure, transfer counters). IPv4 by lease; IPv6 by bound DHCPv6 lease, else by the
MAC a SLAAC address was made from (a cached stage 1 comes up by SLAAC after iPXE fetched
its script by DHCPv6)."""

import time

from appliance.domain import agent, hosts
from appliance.domain.boot_backend import SqliteBackend
from appliance.state.db import Store
from tests.dhcp6_helpers import put_lease6

MAC = "52:54:00:12:34:56"
SLAAC = "fd00:77::5054:ff:fe12:3456"  # what Linux and iPXE make of MAC on fd00:77::/64


def backend(state_dir):
    store = Store(state_dir / "nixie.db")
    conn = store.conn()
    h = hosts.add_host(conn, "node1", [MAC], "github:me/infra")
    hosts.add_host(conn, "node2", ["52:54:00:00:00:02"], "github:me/infra")
    return SqliteBackend(store), conn, h


def test_mac_of_slaac_inverts_the_eui64_interface_identifier():
    assert agent.mac_of_slaac(SLAAC) == MAC
    assert agent.mac_of_slaac("fe80::5054:ff:fe12:3456") == MAC
    iid = agent.eui64_interface_id("02:00:00:aa:bb:cc")
    assert agent.mac_of_slaac(f"fd00::{iid >> 48:x}:{iid >> 32 & 0xffff:x}:"
                              f"{iid >> 16 & 0xffff:x}:{iid & 0xffff:x}") == "02:00:00:aa:bb:cc"
    for not_slaac in ("fd00:77::1:0", "fd00:77::abcd:1234:5678:9abc", "10.0.0.1",
                      "::ffff:10.0.0.1", "not an address", ""):
        assert agent.mac_of_slaac(not_slaac) is None, not_slaac


def test_an_ipv6_fetch_is_put_on_its_host_by_slaac_address_or_dhcpv6_lease(state_dir):
    b, conn, h = backend(state_dir)
    assert b.host_by_ip(SLAAC).name == "node1"
    assert b.host_by_ip("fd00:77::5054:ff:fe00:2").name == "node2"
    assert b.host_by_ip("fd00:77::5054:ff:fe99:9999") is None  # a MAC no host has
    assert b.host_by_ip("fd00:77::1:20") is None  # no lease yet
    put_lease6(conn, "fd00:77::1:20", MAC, expires=time.time() + 600)
    assert b.host_by_ip("fd00:77::1:20").id == h["id"]
    put_lease6(conn, "fd00:77::1:21", MAC, expires=time.time() - 1)  # expired
    put_lease6(conn, "fd00:77::1:22", MAC, state="released", expires=time.time() + 600)
    put_lease6(conn, "fd00:77::1:23", "02:00:00:00:00:99", expires=time.time() + 600)
    for nobody in ("fd00:77::1:21", "fd00:77::1:22", "fd00:77::1:23", "fd00:77::zz", ""):
        assert b.host_by_ip(nobody) is None, nobody


def test_an_ipv4_fetch_is_still_put_on_its_host_by_lease(state_dir):
    b, conn, h = backend(state_dir)
    t = time.time()
    conn.execute("INSERT INTO leases (ip, mac, state, starts, expires, updated_at) "
                 "VALUES ('10.77.0.50', ?, 'bound', ?, ?, ?)", (MAC, t, t + 600, t))
    assert b.host_by_ip("10.77.0.50").id == h["id"]
    assert b.host_by_ip("10.77.0.51") is None
