"""IPv6 in the UI, API and CLI: leases of both families in one pagination, a host's
IPv6 reservation (checked, unique, cleared) through the domain, the host form and
the API. The real DHCPv6 server honouring it is in tests/netns/test_dhcp6_ui.py."""

from __future__ import annotations

import json

import pytest

from appliance.domain import apitokens, hosts, leases, users
from appliance.domain.ipv6 import lan_prefix6
from appliance.errors import Conflict, InvalidInput
from appliance.state.db import now
from tests.dhcp6_helpers import put_lease6
from tests.webapp import PASSWORD, logged_in_client, make_app, post_form

PREFIX6 = "fd00:5::/64"
DUID = "000100011122"


@pytest.fixture
def web(tmp_path):
    return make_app(tmp_path)


def _lease4(conn, ip, mac, expires, state="bound"):
    conn.execute("INSERT INTO leases (ip, mac, state, starts, expires, updated_at) "
                 "VALUES (?,?,?,?,?,?)", (ip, mac, state, now() - 10, expires, now()))


def test_leases_of_both_families_share_one_pagination_newest_expiry_first(web):
    _, store, _ = web
    c = store.conn()
    t = now()
    _lease4(c, "10.0.0.5", "52:54:00:00:00:01", t + 400)
    put_lease6(c, "fd00:5::1:5", "52:54:00:00:00:02", duid=DUID, iaid=3, starts=t - 10,
               expires=t + 300)
    _lease4(c, "10.0.0.6", "52:54:00:00:00:03", t + 200)
    put_lease6(c, "fd00:5::1:6", None, duid="0003000199", starts=t - 10, expires=t - 5)  # expired
    hosts.add_host(c, "box", "52:54:00:00:00:02", "/f")
    rows = leases.list_leases(c)
    assert [(r["family"], r["ip"]) for r in rows] == [
        (4, "10.0.0.5"), (6, "fd00:5::1:5"), (4, "10.0.0.6")]
    v6 = rows[1]
    assert (v6["duid"], v6["iaid"], v6["host"], v6["client_id"]) == ("000100011122", 3, "box",
                                                                     None)
    assert rows[0]["duid"] is None and rows[0]["iaid"] is None
    assert leases.count_leases(c) == 3 and leases.count_leases(c, include_expired=True) == 4
    assert [r["ip"] for r in leases.list_leases(c, limit=2, offset=1)] == [
        "fd00:5::1:5", "10.0.0.6"]
    assert [r["ip"] for r in leases.list_leases(c, family=6, include_expired=True)] == [
        "fd00:5::1:5", "fd00:5::1:6"]
    assert leases.list_leases(c, family=6, include_expired=True)[1]["state"] == "expired"
    assert leases.count_leases(c, family=4) == 2
    with pytest.raises(ValueError):
        leases.list_leases(c, family=5)


def test_api_and_page_list_v6_leases_with_duid_and_iaid(web):
    app, store, _ = web
    c = store.conn()
    put_lease6(c, "fd00:5::1:5", "52:54:00:00:00:02", duid=DUID, iaid=3, starts=now() - 10,
               expires=now() + 300)
    _lease4(c, "10.0.0.5", "52:54:00:00:00:01", now() + 400)
    client = logged_in_client(app)
    token = apitokens.create_token(c, users.get_user_by_name(c, "admin")["id"], "t")[1]
    hdr = {"Authorization": f"Bearer {token}"}
    body = client.get("/api/v1/leases?limit=1&offset=1", headers=hdr).get_json()
    assert body["total"] == 2 and [i["ip"] for i in body["items"]] == ["fd00:5::1:5"]
    assert body["items"][0]["family"] == 6 and body["items"][0]["duid"] == "000100011122"
    r = client.get("/api/v1/leases?family=7", headers=hdr)
    assert r.status_code == 400 and r.get_json()["field"] == "family"
    page = client.get("/leases/?family=6").data.decode()
    assert "fd00:5::1:5" in page and "000100011122 / 3" in page and "10.0.0.5" not in page
    page = client.get("/leases/").data.decode()
    assert "fd00:5::1:5" in page and "10.0.0.5" in page


def test_ip6_reservation_is_checked_unique_and_cleared(web):
    _, store, _ = web
    c = store.conn()
    with pytest.raises(InvalidInput) as e:
        hosts.add_host(c, "a", "52:54:00:00:00:01", "/f", ip6="10.0.0.1")
    assert e.value.field == "ip6"
    with pytest.raises(InvalidInput) as e:
        hosts.add_host(c, "a", "52:54:00:00:00:01", "/f", ip6="fd00:6::1", network6=PREFIX6)
    assert "LAN prefix fd00:5::/64" in str(e.value)
    h = hosts.add_host(c, "a", "52:54:00:00:00:01", "/f", ip6="FD00:5:0::0:10",
                       network6=PREFIX6)
    assert h["ip6_reservation"] == "fd00:5::10" and h["ip6_addresses"] == []
    with pytest.raises(Conflict):
        hosts.add_host(c, "b", "52:54:00:00:00:02", "/f", ip6="fd00:5::10")
    assert hosts.update_host(c, "a", ip6="")["ip6_reservation"] is None
    assert hosts.update_host(c, "a", ip6="fd00:5::11")["ip6_reservation"] == "fd00:5::11"
    assert hosts.update_host(c, "a", mode="netboot")["ip6_reservation"] == "fd00:5::11"


def test_lan_prefix6_is_the_configured_one_or_the_stored_ula(web):
    _, store, _ = web
    c = store.conn()
    assert lan_prefix6(c, "fd00:5::1/64") == PREFIX6
    assert lan_prefix6(c, None) is None  # no ULA made yet: not made here either
    c.execute("INSERT INTO settings (key, value) VALUES ('lan.ula', ?)",
              (json.dumps("fd12:3456:789a::1/64"),))
    assert lan_prefix6(c, None) == "fd12:3456:789a::/64"


def test_host_form_and_api_set_the_ip6_reservation_and_reshow_errors(web):
    app, store, cfg = web
    c = store.conn()
    c.execute("INSERT INTO settings (key, value) VALUES ('lan.ula', ?)",
              (json.dumps("fd00:5::1/64"),))
    client = logged_in_client(app)
    hosts.add_host(c, "box", "52:54:00:00:00:09", "/f")
    form = {"name": "box", "macs": "52:54:00:00:00:09", "flake": "/f", "attr": "",
            "mode": "netboot", "ip": "", "ip6": "fd00:7::9"}
    r = post_form(client, "/hosts/box/edit", form)
    page = r.data.decode()
    assert r.status_code == 400 and 'value="fd00:7::9"' in page
    at = page.index('id="ip6"')
    assert "not a host address of the LAN prefix fd00:5::/64" in page[at:at + 800]
    assert hosts.get_host(c, "box")["ip6_reservation"] is None
    r = post_form(client, "/hosts/box/edit", {**form, "ip6": "fd00:5::9"})
    assert r.status_code == 302
    assert hosts.get_host(c, "box")["ip6_reservation"] == "fd00:5::9"
    assert "fd00:5::9" in client.get("/hosts/box").data.decode()
    token = apitokens.create_token(c, users.get_user_by_name(c, "admin")["id"], "t")[1]
    hdr = {"Authorization": f"Bearer {token}"}
    r = client.patch("/api/v1/hosts/box", json={"ip6_reservation": "nope"}, headers=hdr)
    assert r.status_code == 400 and r.get_json()["field"] == "ip6"
    r = client.patch("/api/v1/hosts/box", json={"ip6_reservation": None}, headers=hdr)
    assert r.status_code == 200 and r.get_json()["ip6_reservation"] is None
    r = client.post("/api/v1/hosts", json={"name": "two", "macs": ["52:54:00:00:00:0a"],
                                           "flake": "/f", "ip6_reservation": "fd00:5::a"},
                    headers=hdr)
    assert r.status_code == 201 and r.get_json()["ip6_reservation"] == "fd00:5::a"
    r = client.post("/api/v1/hosts", json={"name": "three", "macs": ["52:54:00:00:00:0b"],
                                           "flake": "/f", "ip6_reservation": "fd00:5::a"},
                    headers=hdr)
    assert r.status_code == 409
    assert PASSWORD  # the admin logged in with it


def test_cli_host_set_ip6_and_lease_list_family(nixie, config_file, tmp_path):
    r = nixie("host", "add", "c1", "--mac", "52:54:00:00:00:21", "--flake", "/f",
              "--ip6", "fd00:5::21", config=config_file)
    assert r.returncode == 0, r.stderr
    r = nixie("host", "set", "c1", "--ip6", "not-v6", config=config_file)
    assert r.returncode != 0 and "'not-v6' is not an IPv6 address" in r.stderr
    r = nixie("host", "show", "c1", "--json", config=config_file)
    assert json.loads(r.stdout)["ip6_reservation"] == "fd00:5::21"
    r = nixie("host", "set", "c1", "--ip6", "", "--json", config=config_file)
    assert json.loads(r.stdout)["ip6_reservation"] is None
    r = nixie("lease", "list", "--family", "6", "--json", config=config_file)
    assert r.returncode == 0 and json.loads(r.stdout) == []
