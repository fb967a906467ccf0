"""A host's address learned from the real neighbour table of the LAN bridge."""

import json
import sys

from appliance.domain import hosts
from appliance.router import discovery
from appliance.state import db
from lab.netns import Netns, bridge, bridge_port


def test_neighbour_table_gives_host_ip(tmp_path):
    conn = db.connect(tmp_path / "nixie.db")
    with Netns() as router, Netns() as machine:
        bridge(router, "br-lan", "10.77.0.1/24")
        bridge_port(router, "br-lan", "lan0", machine)
        mac = machine.run("cat", "/sys/class/net/eth0/address").stdout.strip()
        hosts.add_host(conn, "m1", [mac], "f")
        hosts.add_host(conn, "m2", ["bc:24:11:00:00:99"], "f")
        machine.run("ip", "addr", "add", "10.77.0.57/24", "dev", "eth0")
        machine.run("ping", "-c", "1", "-W", "2", "10.77.0.1")
        table = router.run(sys.executable, "-c",
                           "import json,appliance.router.discovery as d;print(json.dumps(d.read_neighbours('br-lan')))",
                           check=True).stdout
    neighbours = json.loads(table)
    assert neighbours.get(mac) == "10.77.0.57"
    assert discovery.apply(conn, neighbours) == 1
    assert hosts.get_host(conn, "m1")["ip"] == "10.77.0.57"
    assert hosts.get_host(conn, "m2")["ip"] is None


def test_ipv6_neighbour_table_gives_host_ip6(tmp_path):
    """Issue 16: the IPv6 neighbour table fills `ip6` (shown by `host show`), never `ip`;
    link-local neighbours are left out."""
    conn = db.connect(tmp_path / "nixie.db")
    with Netns() as router, Netns() as machine:
        bridge(router, "br-lan", "10.77.0.1/24")
        router.run("ip", "-6", "addr", "add", "fd00:77::1/64", "dev", "br-lan", "nodad")
        bridge_port(router, "br-lan", "lan0", machine)
        mac = machine.run("cat", "/sys/class/net/eth0/address").stdout.strip()
        hosts.add_host(conn, "m1", [mac], "f")
        machine.run("ip", "-6", "addr", "add", "fd00:77::57/64", "dev", "eth0", "nodad")
        machine.run("ping", "-6", "-c", "1", "-W", "2", "fd00:77::1")
        table = router.run(sys.executable, "-c",
                           "import json,appliance.router.discovery as d;"
                           "print(json.dumps(d.read_neighbours('br-lan', 10)))", check=True).stdout
    neighbours = json.loads(table)
    assert neighbours.get(mac) == "fd00:77::57", neighbours
    assert not any(ip.startswith("fe80:") for ip in neighbours.values()), neighbours
    assert discovery.apply(conn, neighbours, 10) == 1
    h = hosts.get_host(conn, "m1")
    assert h["ip6"] == "fd00:77::57" and h["ip"] is None


def test_whole_link_local_prefix_left_out():
    """fe80::/10 is link-local as a whole (fe80:: to febf::), not only addresses written
    `fe80:`: the kernel's table with neighbours at febf::7 and fe81::7 gives only the
    routable neighbour."""
    with Netns() as router:
        bridge(router, "br-lan", "10.77.0.1/24")
        for ip, mac in (("febf::7", "bc:24:11:00:00:71"), ("fe81::7", "bc:24:11:00:00:72"),
                        ("fd00:77::7", "bc:24:11:00:00:73")):
            router.run("ip", "-6", "neigh", "add", ip, "lladdr", mac, "dev", "br-lan",
                       "nud", "permanent", check=True)
        table = router.run(sys.executable, "-c",
                           "import json,appliance.router.discovery as d;"
                           "print(json.dumps(d.read_neighbours('br-lan', 10)))", check=True).stdout
    assert json.loads(table) == {"bc:24:11:00:00:73": "fd00:77::7"}
