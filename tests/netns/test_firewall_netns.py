"""NAT and firewall in namespaces: a LAN client reaches the WAN through masquerading;
the admin and boot ports answer the LAN and not the WAN."""

import subprocess
import sys
from dataclasses import replace

import pytest

from appliance.router import firewall
from appliance.router.firewall import FirewallSpec
from tests.conftest import wait_for
from tests.netns.routerlab import RouterLab


@pytest.fixture
def lab():
    lab = RouterLab()
    try:
        yield lab
    finally:
        lab.close()


def test_nat_and_admin_port_only_from_lan(lab, tmp_path):
    r, client, wan = lab.router, lab.client, lab.wan
    (tmp_path / "index.html").write_text("hi")
    web = lab.http_server(wan, "192.0.2.10", 80, str(tmp_path))
    lab.http_server(r, "0.0.0.0", 8080, str(tmp_path))  # the admin port on every address
    lab.http_server(r, "0.0.0.0", 8081, str(tmp_path))  # HTTP boot
    wan.run("ip", "route", "add", "10.77.0.0/24", "via", "192.0.2.1")  # so only the firewall stops it

    # before the firewall: the WAN host reaches the admin port, and the LAN client's
    # packets reach the WAN host but no answer can route back (no NAT)
    assert lab.http_status(wan, "192.0.2.1", 8080) == "HTTP/1.0 200 OK"
    wan.run("ip", "route", "del", "10.77.0.0/24", "via", "192.0.2.1")
    assert lab.http_status(client, "192.0.2.10", 80, timeout=1.5) is None

    spec = FirewallSpec("lan0", "10.77.0.0/24", wan_if="wan0", admin_tcp=(22, 8080),
                        boot_tcp=(8081,), dns_port=53)
    text = firewall.render(spec)
    firewall.apply(text, netns=r.name)
    assert "masquerade" in firewall.current(netns=r.name)

    assert lab.http_status(client, "192.0.2.10", 80) == "HTTP/1.0 200 OK"  # through NAT
    assert lab.http_status(client, "10.77.0.1", 8080) == "HTTP/1.0 200 OK"
    assert lab.http_status(client, "10.77.0.1", 8081) == "HTTP/1.0 200 OK"
    assert lab.http_status(wan, "192.0.2.1", 8080, timeout=1.5) is None
    assert lab.http_status(wan, "192.0.2.1", 8081, timeout=1.5) is None
    wan.run("ip", "route", "add", "10.77.0.0/24", "via", "192.0.2.1")
    assert lab.http_status(wan, "10.77.0.1", 8080, timeout=1.5) is None
    # a WAN host cannot open connections into the LAN either
    lab.http_server(client, "0.0.0.0", 8000, str(tmp_path))
    assert lab.http_status(wan, "10.77.0.50", 8000, timeout=1.5) is None
    web.terminate()
    web.wait()
    log = web.stderr.read()
    assert "192.0.2.1 " in log and "10.77.0.50" not in log  # the WAN host saw the router

    # applying again replaces the table (idempotent, atomic)
    firewall.apply(text, netns=r.name)
    assert firewall.current(netns=r.name).count("chain input") == 1
    firewall.remove(netns=r.name)
    assert firewall.current(netns=r.name) == ""


def _serve_dual(lab, port: int, directory: str) -> None:
    """http.server on [::] (dual-stack) in the router's namespace, once it answers."""
    lab.spawn(lab.router, sys.executable, "-m", "http.server", "--bind", "::", str(port),
              "--directory", directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: lab.http_status(lab.router, "::1", port, timeout=0.5) is not None,
                    timeout=15, every=0.2), f"http.server on [::]:{port} did not start"


def test_ipv6_admin_and_boot_ports_from_the_lan_prefix_only(lab, tmp_path):
    """Real packets over IPv6. The ruleset without IPv6 on the LAN drops neighbour
    discovery, so a LAN client cannot reach the router over IPv6 at all; with the LAN
    prefix, it reaches the admin and HTTP boot ports from its address in the prefix
    (neighbour discovery accepted), while the WAN host (routed, so only the firewall
    stops it) and a LAN source outside the prefix do not."""
    r, client, wan = lab.router, lab.client, lab.wan
    r.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    r.run("ip", "-6", "addr", "add", "fd77:6e69:7869::1/64", "dev", "lan0", "nodad")
    r.run("ip", "-6", "addr", "add", "2001:db8:77::1/64", "dev", "wan0", "nodad")
    client.run("ip", "-6", "addr", "add", "fd77:6e69:7869::50/64", "dev", "eth0", "nodad")
    client.run("ip", "-6", "addr", "add", "2001:db8:99::5/64", "dev", "eth0", "nodad")
    wan.run("ip", "-6", "addr", "add", "2001:db8:77::10/64", "dev", "eth0", "nodad")
    wan.run("ip", "-6", "route", "add", "fd77:6e69:7869::/64", "via", "2001:db8:77::1")
    (tmp_path / "index.html").write_text("hi")
    for port in (8080, 8081):
        _serve_dual(lab, port, str(tmp_path))
    router6 = "fd77:6e69:7869::1"
    spec = FirewallSpec("lan0", "10.77.0.0/24", wan_if="wan0", admin_tcp=(22, 8080),
                        boot_tcp=(8081,), dns_port=53)

    firewall.apply(firewall.render(spec), netns=r.name)  # IPv4 only: ND is dropped
    assert lab.http_status(client, router6, 8080, timeout=1.5) is None
    assert lab.http_status(client, "10.77.0.1", 8080) == "HTTP/1.0 200 OK"

    firewall.apply(firewall.render(replace(spec, lan_net6="fd77:6e69:7869::/64")), netns=r.name)
    for port in (8080, 8081):
        assert lab.http_status(client, router6, port, timeout=4) == "HTTP/1.0 200 OK", port
        assert lab.http_status(wan, router6, port, timeout=1.5) is None, port
        assert lab.http_status(wan, "2001:db8:77::1", port, timeout=1.5) is None, port
    # from the LAN, but from outside its prefix: dropped (a spoofed or foreign source)
    probe = ("import socket,sys; s=socket.socket(socket.AF_INET6); s.settimeout(1.5); "
             "s.bind(('2001:db8:99::5', 0)); sys.exit(s.connect_ex((sys.argv[1], 8080)))")
    assert client.run(sys.executable, "-c", probe, router6, check=False).returncode != 0
    assert lab.http_status(client, router6, 8080) == "HTTP/1.0 200 OK"  # its own source still fine
    counters = firewall.current(netns=r.name)
    assert "IPv6 from the LAN only from its prefix" in counters
    dropped = [ln for ln in counters.splitlines() if "only from its prefix" in ln][0]
    assert "packets 0 " not in dropped, dropped
