"""SqliteBackend as the DNS NameDirectory: hosts with an address, bound unexpired leases."""

import time

from appliance.domain import hosts
from appliance.domain.boot_backend import SqliteBackend
from appliance.state.db import Store
from netservices.dns.zone import lan_records
from tests.dhcp6_helpers import put_lease6


def lease(conn, ip, hostname, state="bound", expires_in=600):
    t = time.time()
    conn.execute("INSERT INTO leases (ip, mac, hostname, state, starts, expires, updated_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (ip, "02:00:00:00:00:" + ip.split(".")[-1].zfill(2)[-2:], hostname, state, t,
                  t + expires_in, t))


def test_name_records_from_hosts_and_leases(state_dir):
    store = Store(state_dir / "nixie.db")
    conn = store.conn()
    h = hosts.add_host(conn, "node1", ["bc:24:11:00:00:01"], "github:me/infra")
    hosts.add_host(conn, "node2", ["bc:24:11:00:00:02"], "github:me/infra")  # no address
    hosts.set_state(conn, h["id"], "booted", ip="10.77.0.5")
    lease(conn, "10.77.0.150", "laptop")
    lease(conn, "10.77.0.151", "gone", expires_in=-5)
    lease(conn, "10.77.0.152", "offered", state="offered")
    lease(conn, "10.77.0.153", None)
    b = SqliteBackend(store)
    assert b.name_records() == [("node1", "10.77.0.5", "host", None), ("node2", None, "host", None),
                                ("laptop", "10.77.0.150", "lease", "02:00:00:00:00:50")]


def test_ipv6_names_from_reservations_host_leases_and_dhcpv6_hostnames(state_dir):
    """A host's AAAA: its DHCPv6 reservation, else its MAC's bound DHCPv6 lease; a DHCPv6
    client's hostname names its address, and one client's IPv4 and IPv6 leases share the
    name while another client cannot add itself to it."""
    store = Store(state_dir / "nixie.db")
    conn = store.conn()
    h1 = hosts.add_host(conn, "node1", ["bc:24:11:00:00:01"], "github:me/infra")
    hosts.set_state(conn, h1["id"], "booted", ip="10.77.0.5")
    hosts.add_host(conn, "node2", ["bc:24:11:00:00:02"], "github:me/infra")
    conn.execute("UPDATE hosts SET ip6_reservation = 'fd00:1::22' WHERE name = 'node2'")
    hosts.add_host(conn, "node3", ["bc:24:11:00:00:03"], "github:me/infra")
    t = time.time()
    put_lease6(conn, "fd00:1::1:5", "bc:24:11:00:00:01", starts=t, expires=t + 600)
    put_lease6(conn, "fd00:1::1:6", "bc:24:11:00:00:03", state="released", starts=t, expires=t + 600)
    lease(conn, "10.77.0.150", "laptop")  # MAC 02:00:00:00:00:50
    put_lease6(conn, "fd00:1::1:50", "02:00:00:00:00:50", hostname="laptop", starts=t, expires=t + 600)
    put_lease6(conn, "fd00:1::1:51", "02:00:00:00:00:51", hostname="laptop",  # another client
               starts=t, expires=t + 600)
    records = lan_records(SqliteBackend(store).name_records(), router_ip="10.77.0.1",
                          router_ip6="fd00:1::1", router_names=["gw"])
    assert records == [("node1", "10.77.0.5"), ("node1", "fd00:1::1:5"), ("node2", "fd00:1::22"),
                       ("gw", "10.77.0.1"), ("gw", "fd00:1::1"),
                       ("laptop", "10.77.0.150"), ("laptop", "fd00:1::1:50")]


def test_dhcp_hostnames_never_take_a_registered_or_reserved_name(state_dir):
    """Finding 4, over the real backend: leases claiming `db1` (a registered host, even
    one without an address), `node1`, `wpad`, `localhost` or the router's name get
    nothing; the first lease claiming a free name keeps it."""
    store = Store(state_dir / "nixie.db")
    conn = store.conn()
    h = hosts.add_host(conn, "node1", ["bc:24:11:00:00:01"], "github:me/infra")
    hosts.set_state(conn, h["id"], "booted", ip="10.77.0.5")
    hosts.add_host(conn, "db1", ["bc:24:11:00:00:02"], "github:me/infra")
    for i, name in enumerate(["laptop", "DB1", "node1.lan", "wpad", "WPAD.evil", "localhost",
                              "isatap", "nixie-router", "laptop"]):
        lease(conn, f"10.77.0.{150 + i}", name)
    records = lan_records(SqliteBackend(store).name_records(), router_ip="10.77.0.1",
                          router_names=["nixie-router"])
    assert records == [("node1", "10.77.0.5"), ("nixie-router", "10.77.0.1"),
                       ("laptop", "10.77.0.150")]
