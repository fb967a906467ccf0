"""NAT and firewall in namespaces: a LAN client reaches the WAN through masquerading;
the admin and boot ports answer the LAN and not the WAN."""

import pytest

from appliance.router import firewall
from appliance.router.firewall import FirewallSpec
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
