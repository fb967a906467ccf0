"""Issue 18's UI parity through Flask's test client, the API and the `nixie` CLI: every
new form refuses a post without its CSRF token and shows a bad input on its field with
the input kept; a password change ends the user's other sessions; admins can be added
and removed (not yourself, not the last); the network, VPN, users and host reservation
endpoints of the REST API, and their OpenAPI operations."""

from __future__ import annotations

import json
import re

import pytest

from appliance.domain import apitokens, hosts, users
from appliance.errors import Conflict
from appliance.router import vpn
from appliance.state.db import Store
from tests.conftest import run_nixie
from tests.webapp import PASSWORD, csrf_of, logged_in_client, make_app, post_form

NEW_PASSWORD = "a brand new passphrase"
PEER_KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state")
    yield app, store, cfg
    store.close()


@pytest.fixture
def client(web):
    return logged_in_client(web[0])


def login(app, username="admin", password=PASSWORD):
    c = app.test_client()
    r = post_form(c, "/login", {"username": username, "password": password})
    return c, r


def field_error(html: str, field_id: str) -> str:
    """The error text shown under the field `field_id` ('' when none)."""
    m = re.search(rf'<div class="field[^"]*has-error">\s*<label for="{field_id}".*?</div>', html,
                  re.S)
    return re.sub(r"<[^>]+>", " ", m.group(0)) if m else ""


@pytest.mark.parametrize("path", ["/network/", "/vpn/", "/account/", "/users/",
                                  "/users/admin/remove", "/vpn/laptop/remove",
                                  "/network/changes/0123abcd/confirm",
                                  "/network/changes/0123abcd/revert"])
def test_every_new_form_refuses_a_post_without_its_csrf_token(client, path):
    r = client.post(path, data={"name": "laptop", "username": "ops", "password": "x" * 12,
                                "password2": "x" * 12, "lan_interface": "lo",
                                "lan_address": "127.0.0.1/8", "wan_mode": "none",
                                "confirm_seconds": "30", "current_password": PASSWORD,
                                "new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert r.status_code == 400 and "CSRF" in r.data.decode()


def test_nothing_changed_by_the_refused_posts(client, web):
    _, store, _ = web
    client.post("/users/", data={"username": "ops", "password": "x" * 12, "password2": "x" * 12})
    client.post("/account/", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                   "new_password2": NEW_PASSWORD})
    assert [u["username"] for u in users.list_users(store.conn())] == ["admin"]
    assert login(web[0])[1].status_code == 302  # the password is the old one


def test_network_form_shows_the_bad_field_and_keeps_the_input(client):
    page = client.get("/network/").data.decode()
    assert 'id="network-form"' in page and 'value="127.0.0.1/8"' in page  # the running LAN
    form = {"lan_interface": "lo", "lan_address": "127.0.0.1", "lan_ports": "", "wan_mode": "none",
            "routes": "", "confirm_seconds": "30"}
    r = post_form(client, "/network/", form)
    html = r.data.decode()
    assert r.status_code == 400
    assert "needs a prefix length" in field_error(html, "lan_address")
    assert 'value="127.0.0.1"' in html
    r = post_form(client, "/network/", {**form, "lan_address": "127.0.0.1/8",
                                        "routes": "10.20.0.0/16 through 127.0.0.2"})
    assert r.status_code == 400
    assert "DESTINATION via GATEWAY" in field_error(r.data.decode(), "routes")
    assert "10.20.0.0/16 through 127.0.0.2" in r.data.decode()
    r = post_form(client, "/network/", {**form, "lan_address": "127.0.0.1/8",
                                        "routes": "10.20.0.0/16 via 10.9.9.9.9"})
    assert "not an IPv4 address" in field_error(r.data.decode(), "routes")
    r = post_form(client, "/network/", {**form, "lan_interface": "nosuch-if0",
                                        "lan_address": "127.0.0.1/8"})
    assert "no such interface" in field_error(r.data.decode(), "lan_interface")
    r = post_form(client, "/network/", {**form, "lan_address": "127.0.0.1/8",
                                        "confirm_seconds": "2"})
    assert r.status_code == 400 and field_error(r.data.decode(), "confirm_seconds")


def test_vpn_form_shows_the_bad_field_and_keeps_the_input(client, web):
    r = post_form(client, "/vpn/", {"name": "bad name!", "public_key": ""})
    assert r.status_code == 400
    assert "a peer name is" in field_error(r.data.decode(), "name")
    assert 'value="bad name!"' in r.data.decode()
    r = post_form(client, "/vpn/", {"name": "phone", "public_key": "not-a-key"})
    assert "not a WireGuard public key" in field_error(r.data.decode(), "public_key")
    assert vpn.list_peers(web[1].conn()) == []


def test_vpn_peer_with_its_own_key_is_listed_and_removed(client, web):
    r = post_form(client, "/vpn/", {"name": "phone", "public_key": PEER_KEY})
    assert r.status_code == 302 and r.headers["Location"].endswith("/vpn/phone")
    page = client.get("/vpn/phone").data.decode()
    assert "brought its own key" in page and 'id="peer-qr"' not in page
    assert PEER_KEY in client.get("/vpn/").data.decode()
    r = post_form(client, "/vpn/phone/remove", {}, page="/vpn/")
    assert r.status_code == 302 and vpn.list_peers(web[1].conn()) == []


def test_vpn_peer_with_generated_keys_has_its_config_and_qr(client, web):
    _, store, cfg = web
    r = post_form(client, "/vpn/", {"name": "laptop", "public_key": ""})
    assert r.status_code == 302
    page = client.get("/vpn/laptop").data.decode()
    # the example config has no WAN address nor vpn.endpoint: the page says what to set
    assert "vpn.endpoint" in page and 'id="peer-qr"' not in page


def test_host_reservation_field(client, web):
    _, store, _ = web
    form = {"name": "node1", "macs": "52:54:00:00:18:01", "flake": "path:/srv/fleet", "attr": "",
            "mode": "netboot", "ip": "10.9.9.9"}
    r = post_form(client, "/hosts/_new", form)
    assert r.status_code == 400
    assert "not a host address of the LAN network" in field_error(r.data.decode(), "ip")
    assert 'value="10.9.9.9"' in r.data.decode()
    r = post_form(client, "/hosts/_new", {**form, "ip": "127.0.0.42"})
    assert r.status_code == 302
    assert hosts.get_host(store.conn(), "node1")["ip_reservation"] == "127.0.0.42"
    assert 'value="127.0.0.42"' in client.get("/hosts/node1/edit").data.decode()
    r = post_form(client, "/hosts/node1/edit", {**form, "ip": ""})
    assert r.status_code == 302
    assert hosts.get_host(store.conn(), "node1")["ip_reservation"] is None


def test_password_change_ends_the_other_sessions_only(web):
    app, store, _ = web
    me = logged_in_client(app)
    other, r = login(app)
    assert r.status_code == 302 and other.get("/hosts/").status_code == 200
    form = {"current_password": "not the password", "new_password": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD}
    r = post_form(me, "/account/", form)
    assert r.status_code == 400
    assert "current password is wrong" in field_error(r.data.decode(), "current_password")
    r = post_form(me, "/account/", {**form, "current_password": PASSWORD, "new_password2": "x"})
    assert r.status_code == 400 and "differ" in field_error(r.data.decode(), "new_password2")
    r = post_form(me, "/account/", {**form, "current_password": PASSWORD, "new_password": "short",
                                    "new_password2": "short"})
    assert "at least 8" in field_error(r.data.decode(), "new_password")
    assert other.get("/hosts/").status_code == 200  # nothing changed yet
    r = post_form(me, "/account/", {**form, "current_password": PASSWORD})
    assert r.status_code == 302
    assert me.get("/hosts/").status_code == 200  # this session goes on
    r = other.get("/hosts/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]  # that one ended
    assert login(app, password=PASSWORD)[1].status_code == 401
    assert login(app, password=NEW_PASSWORD)[1].status_code == 302


def test_users_add_and_remove_but_not_yourself(client, web):
    app, store, _ = web
    r = post_form(client, "/users/", {"username": "ops", "password": "short", "password2": "short"})
    assert r.status_code == 400 and "at least 8" in field_error(r.data.decode(), "password")
    assert 'value="ops"' in r.data.decode()
    r = post_form(client, "/users/", {"username": "Bad User", "password": "x" * 12,
                                      "password2": "x" * 12})
    assert "not a valid user name" in field_error(r.data.decode(), "username")
    r = post_form(client, "/users/", {"username": "ops", "password": "ops-password-1",
                                      "password2": "ops-password-1"})
    assert r.status_code == 302
    ops, r = login(app, "ops", "ops-password-1")
    assert r.status_code == 302
    r = post_form(client, "/users/admin/remove", {}, page="/users/")
    assert "cannot remove yourself" in client.get("/users/").data.decode()
    assert [u["username"] for u in users.list_users(store.conn())] == ["admin", "ops"]
    r = post_form(client, "/users/ops/remove", {}, page="/users/")
    assert r.status_code == 302
    assert [u["username"] for u in users.list_users(store.conn())] == ["admin"]
    assert ops.get("/hosts/").status_code == 302  # a removed admin's session ends


def test_the_last_admin_cannot_be_removed(web):
    _, store, _ = web
    conn = store.conn()
    users.create_user(conn, "solo", "solo-password-1")
    with pytest.raises(Conflict, match="last admin"):
        users.remove_user(conn, "solo", acting_user_id=None)


def api_client(web):
    app, store, _ = web
    c = logged_in_client(app)
    uid = users.get_user_by_name(store.conn(), "admin")["id"]
    token = apitokens.create_token(store.conn(), uid, "test")[1]
    return c, {"Authorization": f"Bearer {token}"}


def test_api_users_and_password(web):
    c, auth = api_client(web)
    r = c.post("/api/v1/users", json={"username": "ops", "password": "short"}, headers=auth)
    assert r.status_code == 400 and r.json["field"] == "password"
    r = c.post("/api/v1/users", json={"username": "ops", "password": "ops-password-1"},
               headers=auth)
    assert r.status_code == 201 and r.json["username"] == "ops"
    assert {u["username"] for u in c.get("/api/v1/users", headers=auth).json} == {"admin", "ops"}
    assert c.delete("/api/v1/users/admin", headers=auth).status_code == 409
    assert c.delete("/api/v1/users/ops", headers=auth).status_code == 204
    r = c.post("/api/v1/account/password", json={"current_password": "wrong-one",
                                                 "new_password": NEW_PASSWORD}, headers=auth)
    assert r.status_code == 400 and r.json["field"] == "current_password"
    r = c.post("/api/v1/account/password", json={"current_password": PASSWORD,
                                                 "new_password": NEW_PASSWORD}, headers=auth)
    assert r.status_code == 204
    assert login(web[0], password=NEW_PASSWORD)[1].status_code == 302


def test_api_vpn_peers(web):
    c, auth = api_client(web)
    r = c.post("/api/v1/vpn/peers", json={"name": "phone", "public_key": "nope"}, headers=auth)
    assert r.status_code == 400 and r.json["field"] == "public_key"
    r = c.post("/api/v1/vpn/peers", json={"name": "phone", "public_key": PEER_KEY}, headers=auth)
    assert r.status_code == 201 and r.json["address"] == "10.99.0.2"
    assert [p["name"] for p in c.get("/api/v1/vpn/peers", headers=auth).json] == ["phone"]
    r = c.get("/api/v1/vpn/peers/phone/config", headers=auth)
    assert r.status_code == 409 and "own key" in r.json["error"]
    assert c.delete("/api/v1/vpn/peers/phone", headers=auth).status_code == 204
    assert c.delete("/api/v1/vpn/peers/phone", headers=auth).status_code == 404


def test_api_network_validation_and_unknown_change(web):
    c, auth = api_client(web)
    st = c.get("/api/v1/network", headers=auth)
    assert st.status_code == 200 and st.json["settings"]["lan_address"] == "127.0.0.1/8"
    r = c.put("/api/v1/network", json={"lan_interface": "lo", "lan_address": "127.0.0.1"},
              headers=auth)
    assert r.status_code == 400 and r.json["field"] == "lan_address"
    r = c.put("/api/v1/network", json={"lan_interface": "lo", "lan_address": "127.0.0.1/8",
                                       "confirm_seconds": "soon"}, headers=auth)
    assert r.status_code == 400 and r.json["field"] == "confirm_seconds"
    assert c.get("/api/v1/network/changes/abc123", headers=auth).status_code == 404
    assert c.post("/api/v1/network/changes/abc123/confirm", headers=auth).status_code == 404


def test_api_host_reservation(web):
    c, auth = api_client(web)
    body = {"name": "node2", "macs": ["52:54:00:00:18:02"], "flake": "path:/srv/fleet"}
    r = c.post("/api/v1/hosts", json={**body, "ip_reservation": "10.1.1.1"}, headers=auth)
    assert r.status_code == 400 and r.json["field"] == "ip"
    r = c.post("/api/v1/hosts", json={**body, "ip_reservation": "127.0.0.52"}, headers=auth)
    assert r.status_code == 201 and r.json["ip_reservation"] == "127.0.0.52"
    r = c.patch("/api/v1/hosts/node2", json={"ip_reservation": None}, headers=auth)
    assert r.status_code == 200 and r.json["ip_reservation"] is None


def test_openapi_documents_the_new_operations(client):
    doc = client.get("/api/v1/openapi.json").json
    ops = {(path, m) for path, item in doc["paths"].items() for m in item}
    for op in [("/api/v1/network", "put"), ("/api/v1/network/changes/{txn_id}/confirm", "post"),
               ("/api/v1/vpn/peers", "post"), ("/api/v1/vpn/peers/{name}/qr.svg", "get"),
               ("/api/v1/users/{username}", "delete"), ("/api/v1/account/password", "post")]:
        assert op in ops, op
    for name in ("NetworkChange", "VpnPeer", "User", "PasswordChange"):
        assert name in doc["components"]["schemas"]


def test_cli_admin_passwd_users_and_remove(config_file):
    cfg = json.loads(config_file.read_text())
    r = run_nixie("admin", "create-user", "admin", "--password-stdin", config=config_file,
                  input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    r = run_nixie("admin", "passwd", "admin", "--password-stdin", config=config_file,
                  input="short\n")
    assert r.returncode == 1 and "at least 8" in r.stderr
    r = run_nixie("admin", "passwd", "admin", "--password-stdin", config=config_file,
                  input=NEW_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    store = Store(f"{cfg['state_dir']}/nixie.db")
    try:
        assert users.verify_password(store.conn(), "admin", NEW_PASSWORD) is not None
        assert users.verify_password(store.conn(), "admin", PASSWORD) is None
    finally:
        store.close()
    r = run_nixie("admin", "users", "--json", config=config_file)
    assert [u["username"] for u in json.loads(r.stdout)] == ["admin"]
    r = run_nixie("admin", "remove-user", "admin", config=config_file)
    assert r.returncode == 1 and "last admin" in r.stderr


def test_csrf_token_is_on_every_new_form(client):
    for path in ("/network/", "/vpn/", "/account/", "/users/", "/hosts/_new"):
        assert csrf_of(client.get(path).data)
