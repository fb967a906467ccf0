"""IPv6 in the admin's tools, proven on the wire with real clients against a real
`nixie serve` in namespaces:

- the Settings page's IPv6 section: serve starts with DHCPv6 and router
  advertisements off; an admin saves stateful DHCPv6, a range and RAs in the web UI
  (Flask's test client over serve's own state, as serve's web worker runs it); the
  running serve applies it live, a real `dhclient -6` gets an address from the new
  range and `rdisc6` sees the advertisement with the M flag;
- a host's IPv6 reservation set with `nixie host add --ip6` is what dhclient -6
  gets, and the lease shows in the API, the leases page, the CLI and the host page."""

from __future__ import annotations

import ipaddress
import json
import time

from appliance.config.schema import load_config
from appliance.domain import apitokens, users
from netservices.dhcp6.server import HOSTS_REFRESH_SECONDS
from tests.conftest import run_nixie
from tests.netns.dhcp6_lab import Lan6
from tests.webapp import PASSWORD, app_over, post_form

ROUTER6 = "fd00:78::1/64"
RANGE6 = ("fd00:78::5:100", "fd00:78::5:1ff")

FORM = {"lan_interface": "lan0", "wan_interface": "", "dhcp_mode": "authoritative",
        "dhcp_lease_seconds": "3600", "dhcp_unknown_clients": "menu",
        "boot_menu_timeout_seconds": "5", "boot_cmdline": "", "builder_kind": "local",
        "builder_uri": "", "builder_max_jobs": "1", "builder_substituters": "",
        "builder_trusted_public_keys": "", "lan_address6": ROUTER6, "ra_enable": "y",
        "dhcp6_mode": "stateful", "dhcp6_first": RANGE6[0], "dhcp6_last": RANGE6[1],
        "dhcp6_preferred_seconds": "600", "dhcp6_valid_seconds": "1200"}


def test_dhcp6_saved_on_the_settings_page_serves_dhclient_from_the_new_range(tmp_path):
    lan = Lan6(tmp_path, address6=None, dhcp6={"mode": "off"}, ra={"enable": False})
    try:
        lan.start(dhcp6=False)
        assert not lan.dhcp6_listens()
        cfg = load_config(lan.config)
        form = {**FORM, "dhcp_first": cfg.dhcp.range[0], "dhcp_last": cfg.dhcp.range[1]}
        app, store = app_over(cfg)
        users.create_user(store.conn(), "admin", PASSWORD)
        web = app.test_client()
        r = post_form(web, "/login", {"username": "admin", "password": PASSWORD})
        assert r.status_code == 302, r.data[:300]
        # a bad range is refused on its field and changes nothing on the wire
        r = post_form(web, "/settings/", {**form, "dhcp6_first": "fd00:77::1"})
        assert r.status_code == 400 and "outside the LAN prefix fd00:78::/64" in r.data.decode()
        r = post_form(web, "/settings/", form)
        assert r.status_code == 302, r.data.decode()[-2000:]
        lan.wait_dhcp6(timeout=15)
        _, out = lan.dhclient6()
        bound = lan.wait_line(out, "BOUND6", 30)
        addr = ipaddress.IPv6Address(bound[1])
        assert ipaddress.IPv6Address(RANGE6[0]) <= addr <= ipaddress.IPv6Address(RANGE6[1]), bound
        assert any(a.startswith(f"{addr}/") for a in lan.client_addresses6())
        ra = lan.client.run("rdisc6", "-1", "-w", "3000", "eth0").stdout
        assert "Stateful address conf.    :          Yes" in ra, ra
        assert "Prefix                   : fd00:78::/64" in ra, ra
        # the page shows the saved values
        page = web.get("/settings/").data.decode()
        assert f'value="{RANGE6[1]}"' in page and f'value="{ROUTER6}"' in page
    finally:
        lan.close()


def test_ip6_reservation_from_the_cli_is_what_dhclient_gets_and_ui_api_cli_show_it(tmp_path):
    """`nixie host add --ip6` (the real CLI, on serve's state) reserves an address; a
    real dhclient -6 of that MAC gets it; the lease is listed with its DUID and IAID by
    `/api/v1/leases`, the leases page and `nixie lease list`, and the host page shows the
    address bound to the host."""
    lan = Lan6(tmp_path, address6=ROUTER6, dhcp6={"range": list(RANGE6)})
    try:
        lan.start()
        reserved = "fd00:78::77"  # outside the dynamic range
        bad = run_nixie("host", "add", "v6box", "--mac", lan.mac(), "--flake", "/srv/f",
                        "--ip6", "fd00:99::1", config=lan.config)
        assert bad.returncode != 0 and "not a host address of the LAN prefix fd00:78::/64" \
            in bad.stderr, bad
        ok = run_nixie("host", "add", "v6box", "--mac", lan.mac(), "--flake", "/srv/f",
                       "--ip6", reserved, config=lan.config)
        assert ok.returncode == 0, ok.stderr
        time.sleep(HOSTS_REFRESH_SECONDS + 1)  # serve's DHCPv6 re-reads the hosts
        _, out = lan.dhclient6()
        bound = lan.wait_line(out, "BOUND6", 30)
        assert bound[1] == reserved, bound
        assert any(a.startswith(f"{reserved}/") for a in lan.client_addresses6())
        row = lan.leases6()[reserved]
        # the API, the page and the CLI list it, v6 with DUID/IAID, paginated with v4
        cfg = load_config(lan.config)
        app, store = app_over(cfg)
        token = apitokens.create_token(store.conn(), users.create_user(
            store.conn(), "admin", PASSWORD), "t")[1]
        api = app.test_client()
        hdr = {"Authorization": f"Bearer {token}"}
        page = api.get("/api/v1/leases?family=6", headers=hdr).get_json()
        assert page["total"] == 1 and page["limit"] == 100
        item = page["items"][0]
        assert (item["family"], item["ip"], item["duid"], item["iaid"], item["host"]) == (
            6, reserved, row["duid"], row["iaid"], "v6box"), item
        assert api.get("/api/v1/leases?family=5", headers=hdr).status_code == 400
        assert api.get("/api/v1/hosts/v6box", headers=hdr).get_json()["ip6_addresses"] == [
            reserved]
        cli = run_nixie("lease", "list", "--json", config=lan.config)
        assert [(r["family"], r["ip"], r["duid"]) for r in json.loads(cli.stdout)] == [
            (6, reserved, row["duid"])], cli.stdout
        web = app.test_client()
        assert post_form(web, "/login", {"username": "admin", "password": PASSWORD}
                         ).status_code == 302
        leases_page = web.get("/leases/").data.decode()
        assert reserved in leases_page and f"{row['duid']} / {row['iaid']}" in leases_page
        host_page = web.get("/hosts/v6box").data.decode()
        at = host_page.index('id="host-ip6"')
        assert reserved in host_page[at:at + 200]
    finally:
        lan.close()
