"""The web UI and REST API through Flask's test client: first-run gate, login,
CSRF, headers, forms that keep input, the API's auth and error mapping."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest

from appliance.domain import apitokens, builds, generations, hosts, settings, users
from appliance.domain.ipv6 import lan_address6
from appliance.errors import InvalidInput
from tests.webapp import (
    PASSWORD,
    csrf_of,
    logged_in_client,
    make_app,
    post_form,
    setup_answers,
    setup_code_of,
)


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state")
    yield app, store, cfg
    store.close()


@pytest.fixture
def client(web):
    return logged_in_client(web[0])


def test_before_setup_everything_goes_to_the_wizard(web):
    app, store, _ = web
    c = app.test_client()
    for path in ("/", "/hosts/", "/login", "/settings/"):
        r = c.get(path)
        assert r.status_code == 302 and r.headers["Location"].endswith("/setup"), path
    r = c.get("/api/v1/hosts")
    assert r.status_code == 503 and "setup" in r.json["error"]
    assert c.get("/setup").status_code == 200
    assert c.get("/healthz").status_code == 200


def test_wizard_bad_answer_keeps_input_and_names_field(web):
    app, store, _ = web
    c = app.test_client()
    r = post_form(c, "/setup", setup_answers(app, dhcp_first="10.9.9.9", lan_interface="lan0"))
    assert r.status_code == 400
    page = r.data.decode()
    assert "outside the LAN network" in page
    assert 'value="10.9.9.9"' in page and 'value="lan0"' in page
    assert users.count_users(store.conn()) == 0 and not settings.is_setup_complete(store.conn())
    r = post_form(c, "/setup", setup_answers(app, password2="different"))
    assert r.status_code == 400 and "passwords differ" in r.data.decode()


def test_wizard_stores_answers_and_logs_in(web):
    app, store, cfg = web
    c = app.test_client()
    r = post_form(c, "/setup", setup_answers(app, lan_interface="eth9", builder_kind="remote",
                                             builder_uri="ssh-ng://nix@b"))
    assert r.status_code == 302
    eff = settings.effective_config(cfg, store.conn())
    assert eff.lan.interface == "eth9" and eff.builder.kind == "remote"
    assert c.get("/").status_code == 200
    # the wizard is closed now
    assert c.get("/setup").status_code == 302
    r = post_form(c, "/setup", setup_answers(app, username="mallory", setup_code="AAAA-AAAA-AAAA"), page="/")
    assert r.status_code == 302 and users.count_users(store.conn()) == 1


def test_login_logout_and_cookie_flags(web):
    app, store, _ = web
    logged_in_client(app)
    c = app.test_client()
    assert c.get("/hosts/").status_code == 302
    r = post_form(c, "/login", {"username": "admin", "password": "wrong-password"})
    assert r.status_code == 401 and "Wrong user name or password" in r.data.decode()
    assert 'value="admin"' in r.data.decode()  # the user name is kept
    r = post_form(c, "/login?next=/hosts/", {"username": "admin", "password": PASSWORD}, page="/login")
    assert r.status_code == 302 and r.headers["Location"].endswith("/hosts/")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert c.get("/hosts/").status_code == 200
    r = post_form(c, "/logout", {}, page="/")
    assert r.status_code == 302
    assert c.get("/hosts/").status_code == 302
    kinds = [r["kind"] for r in store.conn().execute("SELECT kind FROM events")]
    assert "auth.login_failed" in kinds and "auth.login" in kinds and "auth.logout" in kinds


def test_session_cookie_secure_behind_tls_proxy(web):
    app, _, _ = web
    c = app.test_client()
    token = csrf_of(c.get("/setup", headers={"X-Forwarded-Proto": "https"}).data)
    r = c.post("/setup", data={**setup_answers(app), "csrf_token": token},
               headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 302
    assert "Secure" in r.headers["Set-Cookie"]
    assert "max-age" in r.headers["Strict-Transport-Security"]


def test_open_redirect_refused(web):
    app, _, _ = web
    logged_in_client(app)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil"):
        c = app.test_client()
        r = post_form(c, "/login?next=" + target, {"username": "admin", "password": PASSWORD},
                      page="/login")
        assert r.status_code == 302 and r.headers["Location"] == "/", target


def test_security_headers_and_csp(client):
    r = client.get("/")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    html = r.data.decode()
    assert "<script>" not in html and " onclick=" not in html and "style=" not in html
    assert "http://" not in html.replace("http://localhost", "")  # no CDN
    assert client.get("/api/v1/status").headers["X-Frame-Options"] == "DENY"


def test_post_without_csrf_refused(client, web):
    _, store, _ = web
    r = client.post("/hosts/_new", data={"name": "x1", "macs": "52:54:00:00:00:01", "flake": "f"})
    assert r.status_code == 400 and "CSRF" in r.data.decode()
    assert hosts.count_hosts(store.conn()) == 0
    r = client.post("/api/v1/hosts", json={"name": "x1", "macs": ["52:54:00:00:00:01"], "flake": "f"})
    assert r.status_code == 400 and "CSRF" in r.json["error"]
    # with the header the session may use the API
    token = csrf_of(client.get("/").data)
    r = client.post("/api/v1/hosts", json={"name": "x1", "macs": ["52:54:00:00:00:01"], "flake": "f"},
                    headers={"X-CSRFToken": token})
    assert r.status_code == 201 and r.json["name"] == "x1"


def test_host_form_error_keeps_input(client, web):
    _, store, _ = web
    r = post_form(client, "/hosts/_new", {"name": "web1", "macs": "52:54:00:aa:bb:zz",
                                          "flake": "/srv/fleet", "mode": "install"})
    assert r.status_code == 400
    page = r.data.decode()
    assert "52:54:00:aa:bb:zz" in page and 'value="/srv/fleet"' in page
    assert 'value="install" selected' in page or 'selected value="install"' in page
    assert 'class="error"' in page
    assert hosts.count_hosts(store.conn()) == 0


def test_host_pages_generation_and_import_export(client, web):
    _, store, _ = web
    conn = store.conn()
    r = post_form(client, "/hosts/_new", {"name": "web1", "macs": "52:54:00:00:00:01 52-54-00-00-00-02",
                                          "flake": "/srv/fleet", "mode": "netboot"})
    assert r.status_code == 302
    h = hosts.get_host(conn, "web1")
    assert h["macs"] == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    for n in (1, 2):
        conn.execute("INSERT INTO generations (host_id, number, toplevel, created_at) VALUES (?,?,?,0)",
                     (h["id"], n, f"/nix/store/{n}-system"))
    conn.execute("UPDATE hosts SET current_generation = 2 WHERE id = ?", (h["id"],))
    page = client.get("/hosts/web1").data.decode()
    assert "/nix/store/2-system" in page
    r = post_form(client, "/hosts/web1/generation", {"number": "1"}, page="/hosts/web1")
    assert r.status_code == 302
    assert hosts.get_host(conn, "web1")["current_generation"] == 1
    # export then import into a changed name
    r = client.get("/hosts/hosts.json")
    assert r.headers["Content-Disposition"].startswith("attachment")
    data = json.loads(r.data)
    assert data["web1"]["macs"] == h["macs"]
    import io

    body = json.dumps({"db1": {"mac_address": "52:54:00:00:00:09"}}).encode()
    token = csrf_of(client.get("/hosts/").data)
    r = client.post("/hosts/_import", data={"csrf_token": token, "flake": "/srv/other",
                                            "file": (io.BytesIO(body), "hosts.json")},
                    content_type="multipart/form-data")
    assert r.status_code == 302
    assert hosts.get_host(conn, "db1")["flake"] == "/srv/other"
    # search and pagination
    page = client.get("/hosts/?q=00:09").data.decode()
    assert "db1" in page and "web1" not in page.split('id="hosts-table"')[1]


def test_set_current_generation_checks():
    import tempfile

    from appliance.state.db import connect

    conn = connect(tempfile.mkdtemp() + "/t.db")
    hosts.add_host(conn, "a", "52:54:00:00:00:01", "/f")
    with pytest.raises(InvalidInput):
        generations.set_current_generation(conn, "a", 0)
    from appliance.errors import NotFound

    with pytest.raises(NotFound):
        generations.set_current_generation(conn, "a", 3)


def test_settings_page_validates_with_config_checkers(client, web):
    _, store, cfg = web
    form = settings.effective_values(cfg, store.conn())
    data = {"lan_interface": "lo", "wan_interface": "", "dhcp_mode": "authoritative",
            "dhcp_first": "127.0.0.150", "dhcp_last": "127.0.0.120", "dhcp_lease_seconds": "600",
            "dhcp_unknown_clients": "menu", "boot_menu": "y", "boot_menu_timeout_seconds": "3",
            "boot_cmdline": "", "builder_kind": "local", "builder_uri": "", "builder_max_jobs": "2",
            "builder_substituters": "https://cache.example\n", "builder_trusted_public_keys": "",
            "lan_address6": "", "dhcp6_mode": "off", "dhcp6_first": "", "dhcp6_last": "",
            "dhcp6_preferred_seconds": "3600", "dhcp6_valid_seconds": "7200"}
    r = post_form(client, "/settings/", data)
    assert r.status_code == 400 and "is before first" in r.data.decode()
    assert 'value="127.0.0.150"' in r.data.decode()
    assert settings.effective_values(cfg, store.conn()) == form
    data["dhcp_first"], data["dhcp_last"] = "127.0.0.110", "127.0.0.130"
    r = post_form(client, "/settings/", data)
    assert r.status_code == 302
    v = settings.effective_values(cfg, store.conn())
    assert v["dhcp.range"] == ["127.0.0.110", "127.0.0.130"] and v["builder.max_jobs"] == 2
    assert v["builder.substituters"] == ["https://cache.example"]


SETTINGS6 = {"lan_interface": "lo", "wan_interface": "", "dhcp_mode": "authoritative",
             "dhcp_first": "127.0.0.100", "dhcp_last": "127.0.0.199", "dhcp_lease_seconds": "3600",
             "dhcp_unknown_clients": "menu", "boot_menu_timeout_seconds": "5", "boot_cmdline": "",
             "builder_kind": "local", "builder_uri": "", "builder_max_jobs": "1",
             "builder_substituters": "", "builder_trusted_public_keys": "",
             "lan_address6": "fd00:5::1/64", "ra_enable": "y", "dhcp6_mode": "stateful",
             "dhcp6_first": "fd00:5::2:0", "dhcp6_last": "fd00:5::2:ff",
             "dhcp6_preferred_seconds": "600", "dhcp6_valid_seconds": "1200"}


@pytest.mark.parametrize("bad, field, problem", [
    ({"dhcp6_first": "fd00:4::1"}, "dhcp6_first", "outside the LAN prefix fd00:5::/64"),
    ({"dhcp6_first": "fd00:5::3:0"}, "dhcp6_first", "is before first"),
    ({"dhcp6_last": "not-an-address"}, "dhcp6_first", "is not an IPv6 address"),
    ({"lan_address6": "10.0.0.1/24"}, "lan_address6", "IPv6"),
    ({"dhcp6_valid_seconds": "300"}, "dhcp6_valid_seconds", "shorter than dhcp6.preferred"),
    ({"dhcp6_mode": "sometimes"}, "dhcp6_mode", "Not a valid choice"),
])
def test_settings_ipv6_section_reshows_the_field_error_and_stores_nothing(client, web, bad, field,
                                                                          problem):
    _, store, cfg = web
    before = settings.effective_values(cfg, store.conn())
    r = post_form(client, "/settings/", {**SETTINGS6, **bad})
    page = r.data.decode()
    assert r.status_code == 400 and problem in page, page[-3000:]
    # the error sits under its field, whose typed value is shown again
    at = page.index(f'id="{field}"')
    assert problem in page[at:at + 1500]
    for v in bad.values():
        if v != "sometimes":
            assert f'value="{v}"' in page
    assert settings.effective_values(cfg, store.conn()) == before


def test_settings_ipv6_section_saves_and_an_empty_range_means_the_default(client, web):
    _, store, cfg = web
    r = post_form(client, "/settings/", SETTINGS6)
    assert r.status_code == 302, r.data.decode()[-2000:]
    eff = settings.effective_config(cfg, store.conn())
    assert (eff.lan.address6, eff.ra.enable, eff.dhcp6.mode, eff.dhcp6.range,
            eff.dhcp6.preferred_seconds, eff.dhcp6.valid_seconds) == (
        "fd00:5::1/64", True, "stateful", ["fd00:5::2:0", "fd00:5::2:ff"], 600, 1200)
    page = client.get("/settings/").data.decode()
    assert 'value="fd00:5::2:ff"' in page and 'value="fd00:5::1/64"' in page
    r = post_form(client, "/settings/", {**SETTINGS6, "dhcp6_first": "", "dhcp6_last": ""})
    assert r.status_code == 302
    assert settings.effective_config(cfg, store.conn()).dhcp6.range is None


def test_settings_ipv6_range_is_checked_against_the_generated_ula(web):
    _, store, cfg = web
    conn = store.conn()
    ula = lan_address6(conn, None)  # what serve generates at its first start
    net = ipaddress.IPv6Interface(ula).network
    inside = [str(net.network_address + 0x100), str(net.network_address + 0x1ff)]
    settings.update(cfg, conn, {"dhcp6.mode": "stateful", "dhcp6.range": inside})
    with pytest.raises(InvalidInput) as e:
        settings.update(cfg, conn, {"dhcp6.range": ["fd00:9::1", "fd00:9::2"]})
    assert e.value.field == "dhcp6.range" and str(net) in str(e.value)
    assert settings.effective_config(cfg, conn).dhcp6.range == inside


def test_settings_rejects_unknown_keys(web):
    _, store, cfg = web
    with pytest.raises(InvalidInput) as e:
        settings.update(cfg, store.conn(), {"state_dir": "/tmp"})
    assert e.value.field == "state_dir"


def test_api_token_lifecycle_and_error_mapping(client, web):
    _, store, _ = web
    token = csrf_of(client.get("/tokens/").data)
    r = client.post("/tokens/", data={"csrf_token": token, "name": "ci"})
    page = r.data.decode()
    secret = page.split('id="new-token">')[1].split("<")[0]
    assert secret.startswith("nxt_")
    row = store.conn().execute("SELECT token_hash FROM api_tokens").fetchone()
    assert secret not in row["token_hash"]
    anon = client.application.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    # a bearer token needs no CSRF token
    r = anon.post("/api/v1/hosts", json={"name": "n1", "macs": ["52:54:00:00:00:01"], "flake": "f"},
                  headers=auth)
    assert r.status_code == 201
    r = anon.post("/api/v1/hosts", json={"name": "n2", "macs": ["52:54:00:00:00:01"], "flake": "f"},
                  headers=auth)
    assert r.status_code == 409 and "already belongs" in r.json["error"]
    r = anon.post("/api/v1/hosts", json={"name": "Bad!", "macs": ["52:54:00:00:00:03"], "flake": "f"},
                  headers=auth)
    assert r.status_code == 400 and r.json["field"] == "name"
    assert anon.get("/api/v1/hosts/nope", headers=auth).status_code == 404
    r = anon.post("/api/v1/builds", json={"host": "n1"}, headers=auth)
    assert r.status_code == 201 and r.json["status"] == "queued"
    assert builds.get_build(store.conn(), r.json["id"])["host_name"] == "n1"
    assert anon.get("/api/v1/hosts", headers={"Authorization": "Bearer nxt_wrong"}).status_code == 401
    assert anon.get("/api/v1/hosts").status_code == 401
    tid = apitokens.list_tokens(store.conn())[0]["id"]
    r = post_form(client, f"/tokens/{tid}/revoke", {}, page="/tokens/")
    assert r.status_code == 302
    assert anon.get("/api/v1/hosts", headers=auth).status_code == 401


def test_build_log_endpoint_reads_from_offset(client, web, tmp_path):
    _, store, _ = web
    conn = store.conn()
    hosts.add_host(conn, "b1", "52:54:00:00:00:01", "/f")
    b = builds.enqueue(conn, "b1")
    log = tmp_path / "b.log"
    log.write_bytes("line one\nüber\n".encode())
    conn.execute("UPDATE builds SET log_path = ?, status = 'running', progress = ? WHERE id = ?",
                 (str(log), json.dumps({"done": 1, "total": 4}), b["id"]))
    r = client.get(f"/api/v1/builds/{b['id']}/log")
    assert r.json["text"] == "line one\nüber\n" and r.json["progress"] == 0.25
    assert r.json["final"] is False
    off = r.json["offset"]
    with open(log, "ab") as f:
        f.write(b"done\n")
    conn.execute("UPDATE builds SET status = 'succeeded' WHERE id = ?", (b["id"],))
    r = client.get(f"/api/v1/builds/{b['id']}/log?offset={off}")
    assert r.json["text"] == "done\n" and r.json["final"] is True
    assert "build-log" in client.get(f"/builds/{b['id']}").data.decode()


def test_whole_utf8_never_splits_a_character():
    from appliance.domain.builds import whole_utf8

    data = "aü€😀".encode()
    for cut in range(len(data) + 1):
        part = whole_utf8(data[:cut])
        part.decode("utf-8")  # never raises
        assert data.startswith(part) and len(part) >= cut - 3


def test_openapi_lists_every_api_route(client):
    import re

    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.")
    app = client.application
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in doc["paths"], path
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            assert m.lower() in doc["paths"][path], f"{m} {path}"
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for prm in op.get("parameters", []):
                if prm["in"] == "path":
                    assert "{" + prm["name"] + "}" in path


def test_events_filters_and_pages(client, web):
    from appliance.domain import events

    _, store, _ = web
    conn = store.conn()
    hosts.add_host(conn, "e1", "52:54:00:00:00:01", "/f")
    hid = hosts.get_host(conn, "e1")["id"]
    for i in range(120):
        events.record(conn, "host.booting" if i % 2 else "lease.bound", f"m{i}",
                      level="error" if i % 10 == 0 else "info", host_id=hid if i % 3 == 0 else None)
    r = client.get("/api/v1/events?kind=host.*&level=info&limit=500").json["items"]
    assert r and all(e["kind"].startswith("host.") for e in r)
    r = client.get("/api/v1/events?level=error&limit=500").json["items"]
    assert len(r) == 12 and all(e["level"] == "error" for e in r)
    r = client.get("/api/v1/events?host=e1&limit=500").json["items"]
    assert all(e["host"] == "e1" for e in r) and len(r) == 41  # 40 + host.added
    first = client.get("/api/v1/events?limit=10").json["items"]
    # the deprecated before= still pages
    second = client.get(f"/api/v1/events?limit=10&before={first[-1]['id']}").json["items"]
    assert second[0]["id"] < first[-1]["id"]
    page = client.get("/events/?kind=lease.bound").data.decode()
    assert "Older" in page and "host.booting</code>" not in page
    assert client.get("/api/v1/events?level=loud").status_code == 400


def test_settings_store_only_what_differs_from_the_file(web):
    _, store, cfg = web
    conn = store.conn()
    settings.update(cfg, conn, {"dhcp.lease_seconds": 600, "boot.menu": True})
    assert settings.overrides(conn) == {"dhcp.lease_seconds": 600}  # boot.menu is the file's
    settings.update(cfg, conn, {"dhcp.lease_seconds": cfg.dhcp.lease_seconds})
    assert settings.overrides(conn) == {}
    assert settings.effective_config(cfg, conn).dhcp.lease_seconds == cfg.dhcp.lease_seconds


def test_progress_from_the_build_workers_json():
    from webui.filters import progress_fraction, progress_phase

    worker = {"builds_done": 1, "builds_expected": 2, "paths_fetched": 1, "paths_expected": 2,
              "running": ["building '/nix/store/x-demo.drv'"], "phase": "buildPhase"}
    assert progress_fraction(json.dumps(worker)) == 0.5
    assert progress_fraction({"builds_done": 0, "builds_expected": 0}) is None
    assert progress_fraction({"percent": 40}) == 0.4
    assert progress_fraction({"done": 3, "total": 4}) == 0.75
    assert progress_fraction("not json") is None and progress_fraction(None) is None
    assert progress_phase(worker) == "buildPhase · building '/nix/store/x-demo.drv'"


def test_dashboard_figures_refresh_after_a_change_through_the_app(client):
    assert "No hosts yet" in client.get("/").data.decode()  # figures cached now
    r = post_form(client, "/hosts/_new", {"name": "fresh1", "macs": "52:54:00:00:00:0f",
                                          "flake": "/srv/fleet", "mode": "netboot"})
    assert r.status_code == 302
    page = client.get("/").data.decode()
    assert "fresh1" in page and 'id="stat-hosts">1<' in page


def test_setup_wizard_runs_once_even_when_raced(web):
    from concurrent.futures import ThreadPoolExecutor

    from appliance.errors import Conflict
    from appliance.state.db import connect

    _, store, cfg = web

    code = setup_code_of(web[0])

    def attempt(name):
        conn = connect(store.path, migrate=False)
        try:
            return settings.complete_setup(cfg, conn, username=name, password=PASSWORD, values={},
                                           setup_code=code)
        except Conflict:
            return None
        finally:
            conn.close()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, ["alice", "bob", "carol", "dave"]))
    assert sum(r is not None for r in results) == 1
    assert users.count_users(store.conn()) == 1


def test_an_admin_made_with_the_cli_skips_the_wizard(web):
    app, store, _ = web
    users.create_user(store.conn(), "ops", PASSWORD)  # what `nixie admin create-user` does
    c = app.test_client()
    r = c.get("/hosts/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert c.get("/setup").status_code == 302
    r = post_form(c, "/login", {"username": "ops", "password": PASSWORD})
    assert r.status_code == 302 and c.get("/hosts/").status_code == 200


def test_host_page_marks_the_generation_it_boots_by_default(client, web):
    _, store, _ = web
    conn = store.conn()
    h = hosts.add_host(conn, "gen1", "52:54:00:00:00:21", "/srv/fleet")
    for n in (1, 2, 3):
        conn.execute("INSERT INTO generations (host_id, number, toplevel, created_at) VALUES (?,?,?,0)",
                     (h["id"], n, f"/nix/store/{n}-system"))

    def marked(page: str) -> list[int]:
        return [int(n) for n in re.findall(r'<tr class="current" id="generation-(\d+)">', page)]

    # none chosen yet: the newest, as the boot menu's default
    page = client.get("/hosts/gen1").data.decode()
    assert marked(page) == [3] and page.count(">boots by default<") == 1
    assert '<option selected value="3">' in page
    r = post_form(client, "/hosts/gen1/generation", {"number": "1"}, page="/hosts/gen1")
    assert r.status_code == 302
    page = client.get("/hosts/gen1").data.decode()
    assert "host gen1 now boots generation 1 by default." in page
    assert marked(page) == [1] and '<option selected value="1">' in page
    assert hosts.get_host(conn, "gen1")["current_generation"] == 1
    # through the API the same
    token = csrf_of(page)
    r = client.put("/api/v1/hosts/gen1/generation", json={"number": 2}, headers={"X-CSRFToken": token})
    assert r.status_code == 200 and r.json["current_generation"] == 2
    assert marked(client.get("/hosts/gen1").data.decode()) == [2]
