"""Issue 18, UI parity, in the real Chromium against the whole `nixie serve` in a router
namespace (tests/netns/desired_lab.py): Chromium runs in the LAN client's namespace, as an
admin's laptop on the LAN would.

- Network: moving the LAN address away from the one the browser uses cuts it off; the
  page had the countdown already, says it lost the router, and comes back with the change
  rolled back by the router itself. A confirmed change (a static route) stays past its
  window.
- VPN: a peer added in the UI; its QR code, as the browser shows it, decodes (zbarimg)
  to exactly the config the page downloads, and a wireguard-go peer set up from that
  config, on the WAN side, reaches the UI through the tunnel.
- Hosts: the IP reservation set on the host form is the address a real DHCP client
  (busybox udhcpc) with that MAC gets.
- Account and users: a password change (the old password stops working, the new one
  works); an admin added and removed.
Every form shows a bad input on its field first."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from lab.netns import Netns, stop_processes, veth
from tests.browser.chromium import chromium_page, shot
from tests.netns.desired_lab import WEB, add_client, appliance_lan, request, udhcpc_lease, wait_for
from tests.netns.routerlab import RouterLab
from tests.netns.test_vpn_netns import parse_wg_quick

PASSWORD = "parity-pw-1"
NEW_PASSWORD = "parity-pw-2-longer"
RANGE = ("10.77.0.100", "10.77.0.119")
RESERVED = "10.77.0.42"
TAG = os.getpid() % 100000


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    """serve in the router's namespace (LAN lan0 10.77.0.1/24, WAN wan0 192.0.2.1/24,
    the VPN server on), a LAN client at 10.77.0.50 and a VPN peer's namespace on the WAN."""
    if not shutil.which("zbarimg"):
        pytest.skip("zbarimg (Debian zbar-tools) is not installed")
    tmp = tmp_path_factory.mktemp("ui-parity")
    lan = appliance_lan(tmp, RANGE, wan={"interface": "wan0", "address": "192.0.2.1/24"},
                        vpn={"enable": True, "interface": f"wgp{TAG}", "listen_port": 51820,
                             "address": "10.99.0.1/24", "endpoint": "192.0.2.1:51820"})
    remote = Netns()
    procs: list[subprocess.Popen] = []
    try:
        veth(lan.router, "wan0", remote, "eth0")
        lan.router.run("ip", "addr", "add", "192.0.2.1/24", "dev", "wan0")
        remote.run("ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
        lan.client.run("ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
        lan.start()
        wait_for("the web UI", lambda: request(lan.router, "GET", WEB + "/healthz")[0] == 200)
        yield SimpleNamespace(lan=lan, remote=remote, procs=procs, tmp=tmp)
    finally:
        stop_processes(procs)
        remote.close()
        lan.close()


@pytest.fixture(scope="module")
def page(appliance):
    with chromium_page(WEB, appliance.lan.client, appliance.tmp) as p:
        yield p


def router_addresses(lan, dev: str) -> list[str]:
    out = json.loads(lan.router.run("ip", "-j", "-4", "addr", "show", "dev", dev).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for i in out for a in i["addr_info"]]


def error_of(page, field_id: str) -> str:
    return page.inner_text(f".has-error:has(#{field_id}) .error")


def test_setup_then_login(appliance, page):
    page.goto("/")
    assert page.url.endswith("/setup")
    page.fill("#setup_code", (appliance.lan.tmp / "state" / "setup_code").read_text().strip())
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#lan_interface", "lan0")
    page.fill("#wan_interface", "wan0")
    page.select_option("#dhcp_mode", "authoritative")
    page.fill("#dhcp_first", RANGE[0])
    page.fill("#dhcp_last", RANGE[1])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/\?welcome=1$"))


def test_reserved_address_is_what_a_dhcp_client_gets(appliance, page):
    lan = appliance.lan
    mac = add_client(lan, "res0")
    page.goto("/hosts/_new")
    page.fill("#name", "reserved")
    page.fill("#macs", mac)
    page.fill("#flake", "path:/srv/fleet")
    page.fill("#ip", "10.78.0.42")  # not on the LAN
    page.click("button:has-text('Add host')")
    assert "not a host address of the LAN network" in error_of(page, "ip")
    assert page.input_value("#ip") == "10.78.0.42"
    page.fill("#ip", RESERVED)
    page.click("button:has-text('Add host')")
    page.wait_for_url(re.compile(r"/hosts/reserved$"))
    assert page.inner_text("#host-reservation") == RESERVED
    shot(page, "parity-01-host-reservation")
    # serve's DHCP picks the reservation up from the hosts table: a real client gets it
    assert wait_for("udhcpc to get the reserved address",
                    lambda: udhcpc_lease(lan, "res0") == RESERVED, timeout=60)


def test_vpn_peer_qr_is_the_config_and_reaches_the_ui(appliance, page):
    page.goto("/vpn/")
    page.fill("#name", "bad name!")
    page.click("button:has-text('Add peer')")
    assert "a peer name is" in error_of(page, "name")
    page.fill("#name", "laptop")
    page.click("button:has-text('Add peer')")
    page.wait_for_url(re.compile(r"/vpn/laptop$"))
    page.wait_for_selector("#peer-qr")
    qr_png = appliance.tmp / "laptop-qr.png"
    page.locator("#peer-qr").screenshot(path=str(qr_png))
    shot(page, "parity-02-vpn-peer")
    with page.expect_download() as dl:
        page.click("#peer-download")
    config = open(dl.value.path()).read()
    assert config.startswith("[Interface]\nPrivateKey = ")
    decoded = subprocess.run(["zbarimg", "--raw", "-q", str(qr_png)], capture_output=True,
                             text=True, timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout.removesuffix("\n") == config

    # a WireGuard peer on the WAN side, set up from the downloaded config only
    remote, tmp = appliance.remote, appliance.tmp
    conf = parse_wg_quick(config)
    wgc = f"wgc{TAG}"
    keyf = tmp / "laptop.key"
    keyf.touch(mode=0o600)
    keyf.write_text(conf["Interface.PrivateKey"] + "\n")
    appliance.procs.append(remote.popen("wireguard-go", "-f", wgc, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
    wait_for("wireguard-go", lambda: remote.run("wg", "show", wgc, check=False).returncode == 0)
    remote.run("wg", "set", wgc, "private-key", str(keyf), "peer", conf["Peer.PublicKey"],
               "endpoint", conf["Peer.Endpoint"], "allowed-ips",
               conf["Peer.AllowedIPs"].replace(" ", ""), "persistent-keepalive", "5")
    remote.run("ip", "addr", "add", conf["Interface.Address"], "dev", wgc)
    remote.run("ip", "link", "set", wgc, "up")
    remote.run("ip", "route", "add", "10.77.0.0/24", "dev", wgc)
    # the remote namespace has no other way to 10.77.0.1 than the tunnel
    status = wait_for("the UI through the tunnel", lambda: RouterLab.http_status(
        remote, "10.77.0.1", 8080, timeout=1, path="/healthz"), timeout=30)
    # the admin UI answered through the tunnel: over plain HTTP it sends the client to HTTPS
    assert " 301 " in status + " ", status


def test_network_change_that_cuts_the_browser_off_rolls_back_by_itself(appliance, page):
    lan = appliance.lan
    page.goto("/network/")
    assert page.input_value("#lan_address") == "10.77.0.1/24"
    page.fill("#lan_address", "10.77.0.1")
    page.click("button:has-text('Apply')")
    assert "prefix length" in error_of(page, "lan_address")
    page.fill("#lan_address", "10.77.1.1/24")  # the browser, at 10.77.0.50, loses the router
    page.fill("#confirm_seconds", "25")
    page.click("button:has-text('Apply')")
    page.wait_for_selector("#net-change[data-state=pending]")
    assert int(page.inner_text("#net-countdown")) > 0
    # the change is in the kernel and the page sees it has lost the router
    wait_for("the new LAN address", lambda: "10.77.1.1/24" in router_addresses(lan, "lan0"))
    assert "10.77.0.1/24" not in router_addresses(lan, "lan0")
    page.wait_for_selector("#net-lost:not([hidden])", timeout=20_000)
    shot(page, "parity-03-network-cut-off")
    # nobody could confirm: the router rolls back by itself and the page comes back
    page.wait_for_selector("#net-change[data-state=rolled_back]", timeout=90_000)
    assert "not confirmed in time" in page.inner_text("#net-result")
    assert router_addresses(lan, "lan0") == ["10.77.0.1/24"]
    shot(page, "parity-04-network-rolled-back")
    page.goto("/network/")
    assert page.input_value("#lan_address") == "10.77.0.1/24"


def test_confirmed_network_change_stays(appliance, page):
    lan = appliance.lan
    page.goto("/network/")
    page.fill("#routes", "10.88.0.0/16 via 10.77.0.254")
    page.fill("#confirm_seconds", "10")
    page.click("button:has-text('Apply')")
    page.wait_for_selector("#net-change[data-state=pending]")
    change = page.get_attribute("#net-change", "data-change")
    page.click("button:has-text('Confirm: keep it')")
    page.wait_for_selector("#net-change[data-state=confirmed]")
    shot(page, "parity-05-network-confirmed")
    time.sleep(12)  # past the window it had: a confirmed change is not rolled back
    routes = lan.router.run("ip", "route", "show", "10.88.0.0/16").stdout
    assert "via 10.77.0.254" in routes, routes
    page.goto(f"/network/?change={change}")
    assert page.get_attribute("#net-change", "data-state") == "confirmed"
    page.goto("/network/")
    assert page.input_value("#routes") == "10.88.0.0/16 via 10.77.0.254"


def test_users_and_password_change(appliance, page):
    page.goto("/users/")
    page.fill("#username", "ops")
    page.fill("#password", "ops-password-1")
    page.fill("#password2", "something else")
    page.click("button:has-text('Add admin')")
    assert "differ" in error_of(page, "password2")
    assert page.input_value("#username") == "ops"
    page.fill("#password", "ops-password-1")
    page.fill("#password2", "ops-password-1")
    page.click("button:has-text('Add admin')")
    page.wait_for_selector("tr[data-user=ops]")
    assert page.locator("tr[data-user=admin] button:has-text('Remove')").count() == 0  # yourself
    page.once("dialog", lambda d: d.accept())
    page.click("tr[data-user=ops] button:has-text('Remove')")
    page.wait_for_selector(".flash-ok:has-text('removed')")
    assert page.locator("tr[data-user=ops]").count() == 0
    shot(page, "parity-06-users")

    page.goto("/account/")
    page.fill("#current_password", "not-my-password")
    page.fill("#new_password", NEW_PASSWORD)
    page.fill("#new_password2", NEW_PASSWORD)
    page.click("button:has-text('Change password')")
    assert "current password is wrong" in error_of(page, "current_password")
    page.fill("#current_password", PASSWORD)
    page.fill("#new_password", NEW_PASSWORD)
    page.fill("#new_password2", NEW_PASSWORD)
    page.click("button:has-text('Change password')")
    page.wait_for_selector(".flash-ok:has-text('Password changed')")
    shot(page, "parity-07-password-changed")
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text("form")
    page.fill("#password", NEW_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dashboard')")
