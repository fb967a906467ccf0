"""Issue 15, the attacks on authentication, each performed against the real app
(Flask's test client over a real state dir) and seen to fail: a forged session
when the key file is empty or short, locking the admin out with wrong logins, a
session kept alive past its lifetime, /healthz read without a login, a deeply
nested hosts.json, and an unconfigured router taken by the first browser."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import timedelta
from io import BytesIO

import pytest
from flask import Flask

from appliance.config.resolve import resolve
from appliance.config.schema import load_config, parse_config
from appliance.domain import apitokens, loginlimits, settings, setupcode, users
from appliance.domain.loginlimits import LoginLimits
from appliance.errors import ConfigError
from appliance.runtime import webserver, wiring
from appliance.state import secretfile
from appliance.state.db import Store, connect
from tests.conftest import run_nixie
from tests.unit.test_webserver import _free_tcp_port as free_port
from tests.webapp import (
    PASSWORD,
    csrf_of,
    logged_in_client,
    make_app,
    post_form,
    setup_answers,
    setup_code_of,
)
from webui.security import NixieSessionInterface

ATTACKER = "10.0.0.66"
ADMIN = "10.0.0.5"


def client_at(app, address: str):
    """A test client whose requests come from `address`."""
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = address
    return c


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state")
    yield app, store, cfg
    store.close()


def _login(client, password: str):
    token = csrf_of(client.get("/login").data)
    return client.post("/login", data={"username": "admin", "password": password,
                                       "csrf_token": token})


def _health_with_error():
    return {"ok": False, "services": {"dhcp": {"state": "failed", "restarts": 3,
                                               "error": "OSError: [Errno 98] port 67 in use"}}}


# ------------------------------------------------------------ finding 2: the session key


def _forged_cookie(key: bytes, uid: int) -> str:
    """A session cookie for user `uid`, signed with `key` the way the app signs."""
    forger = Flask("forger")
    forger.secret_key = key
    data = {"uid": uid, "user": "admin", "login_at": int(time.time())}
    return NixieSessionInterface().get_signing_serializer(forger).dumps(data)


def test_a_cookie_signed_with_the_old_fallback_key_is_no_session(web):
    app, store, _ = web
    logged_in_client(app)
    uid = store.conn().execute("SELECT id FROM users WHERE username = 'admin'").fetchone()[0]
    for key in (b"dev-only", b""):
        c = app.test_client()
        c.set_cookie("nixie_session", _forged_cookie(key or b"x", uid))
        r = c.get("/hosts/")
        assert r.status_code == 302 and "/login" in r.headers["Location"], key
        assert c.get("/api/v1/hosts").status_code == 401


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"k" * 31], ids=["empty", "7", "31"])
def test_a_short_session_key_file_stops_the_web_ui(config_file, content):
    cfg = load_config(config_file)
    key_file = os.path.join(cfg.state_dir, "secret_key")
    os.makedirs(cfg.state_dir, exist_ok=True)
    with open(key_file, "wb") as f:
        f.write(content)
    with pytest.raises(ConfigError) as e:
        webserver.secret_key(cfg)
    assert f"holds {len(content)} bytes" in str(e.value) and "web.secret_key_file" in str(e.value)
    store = Store(cfg.db_path)
    try:
        with pytest.raises(ConfigError, match="session signing key"):
            wiring.web_app(cfg, store, lambda: {"ok": True})
    finally:
        store.close()


def test_nixie_serve_refuses_to_start_on_an_empty_key_file(config_file, tmp_path):
    """The real `nixie serve`: it exits with the message instead of signing
    sessions with a key anyone can guess."""
    data = json.loads(config_file.read_text())
    data["web"]["workers"] = 2
    data["tftp"]["listen"] = [f"127.0.0.1:{free_port()}"]
    data["boot"]["http_listen"] = f"127.0.0.1:{free_port()}"
    data["web"]["listen"] = [f"127.0.0.1:{free_port()}"]
    config_file.write_text(json.dumps(data))
    cfg = load_config(config_file)
    os.makedirs(cfg.state_dir, exist_ok=True)
    open(os.path.join(cfg.state_dir, "secret_key"), "wb").close()  # a crash left it empty
    try:
        p = run_nixie("serve", config=config_file)
    except subprocess.TimeoutExpired:
        pytest.fail("nixie serve started with an empty session key file")
    assert p.returncode == 2, p.stderr[-2000:]
    assert "the session signing key" in p.stderr and "holds 0 bytes" in p.stderr, p.stderr[-2000:]


def test_the_key_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A full disk at fsync leaves no key file (not an empty one); the next start
    makes a whole key, 0600, and keeps it."""
    path = tmp_path / "state" / "secret_key"

    def full_disk(_fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(secretfile.os, "fsync", full_disk)
        with pytest.raises(OSError):
            secretfile.session_key(path)
    assert not path.exists() and list(path.parent.iterdir()) == []
    key = secretfile.session_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert secretfile.session_key(path) == key
    path.write_bytes(key[:16])  # cut short afterwards (an older version, a bad restore)
    with pytest.raises(ConfigError, match="holds 16 bytes"):
        secretfile.session_key(path)


# ------------------------------------------------------------ finding 9: login throttling


class Clock:
    """The login limits' clock, moved by the test instead of waited for."""

    def __init__(self):
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def test_wrong_logins_for_admin_slow_the_attacker_never_the_admin(web, monkeypatch):
    app, store, _ = web
    logged_in_client(app)
    clock = Clock()
    monkeypatch.setattr(loginlimits, "now", clock)
    attacker = client_at(app, ATTACKER)
    admin = client_at(app, ADMIN)
    waits = []
    for _ in range(LoginLimits.free):  # the first few cost nothing
        assert _login(attacker, "nope-nope").status_code == 401
    for _ in range(8):
        r = _login(attacker, "nope-nope")
        assert r.status_code == 429 and "Too many failed attempts" in r.text
        waits.append(int(r.headers["Retry-After"]))
        # the real admin, from another address, logs in right now
        r = _login(admin, PASSWORD)
        assert r.status_code == 302 and r.headers["Location"] == "/", r.text[:300]
        assert admin.get("/").status_code == 200
        assert admin.post("/logout", data={"csrf_token": csrf_of(admin.get("/").data)}
                          ).status_code == 302
        # even the right password is refused to the attacker's address while it waits
        assert _login(attacker, PASSWORD).status_code == 429
        clock.t += waits[-1]
        assert _login(attacker, "nope-nope").status_code == 401
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128], waits  # progressive
    kinds = [r[0] for r in store.conn().execute("SELECT kind FROM events")]
    assert kinds.count("auth.login_failed") == LoginLimits.free + 8
    assert kinds.count("auth.login") == 8  # the admin logged in every time


def test_the_delay_stops_growing_and_is_forgotten():
    lim = LoginLimits()
    assert [lim.delay_after(n) for n in (0, 2, 3, 4)] == [0, 0, 1, 2]
    assert lim.delay_after(30) == lim.delay_after(10_000) == lim.max_delay


def test_one_address_spraying_names_is_capped_per_address(tmp_path, monkeypatch):
    monkeypatch.setattr(loginlimits, "now", Clock())
    conn = connect(tmp_path / "s.db")
    other = connect(tmp_path / "s.db")  # another web worker process sees the same counts
    lim = LoginLimits(per_ip=5)
    for i in range(5):
        assert lim.retry_after(conn, "10.0.0.9", f"user{i}") == 0
        lim.failed(conn, "10.0.0.9", f"user{i}")
    assert 0 < lim.retry_after(other, "10.0.0.9", "someone-else") <= lim.ip_seconds
    assert lim.retry_after(other, "10.0.0.10", "user0") == 0  # other addresses are not touched


def test_an_ipv6_client_is_counted_by_its_64_not_per_address(tmp_path, monkeypatch):
    """A host picks any address of its /64: a new address per try must not give it a
    fresh count. Another /64, and IPv4 (also written IPv4-mapped), count apart."""
    monkeypatch.setattr(loginlimits, "now", Clock())
    conn = connect(tmp_path / "s.db")
    lim = LoginLimits(free=1, per_ip=5)
    for i in range(5):
        assert lim.retry_after(conn, f"fd00:77::{i + 1:x}", f"user{i}") == 0
        lim.failed(conn, f"fd00:77::{i + 1:x}", f"user{i}")
    assert lim.retry_after(conn, "fd00:77::abcd:1", "someone-else") > 0
    assert lim.retry_after(conn, "fd00:77::ffff:1", "user0") > 0  # the pair, too
    assert lim.retry_after(conn, "fd00:78::1", "user0") == 0  # the next /64 is someone else
    lim.failed(conn, "::ffff:10.0.0.9", "bob")
    assert lim.retry_after(conn, "10.0.0.9", "bob") > 0  # the same IPv4 client
    lim.succeeded(conn, "fd00:77::9", "user0")  # a success from the /64 clears its pair
    assert lim._pair_wait(conn, "fd00:77::/64", "user0", loginlimits.now()) == 0


def test_a_success_clears_only_its_own_pair(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(loginlimits, "now", clock)
    conn = connect(tmp_path / "s.db")
    lim = LoginLimits(free=1)
    lim.failed(conn, "10.0.0.1", "Alice")
    lim.failed(conn, "10.0.0.2", "alice")
    assert lim.retry_after(conn, "10.0.0.1", "ALICE") > 0  # names compare without case
    assert lim.retry_after(conn, "10.0.0.3", "alice") == 0  # no lockout of the name itself
    lim.succeeded(conn, "10.0.0.1", "alice")
    assert lim.retry_after(conn, "10.0.0.1", "alice") == 0
    assert lim.retry_after(conn, "10.0.0.2", "alice") > 0
    clock.t += lim.seconds + 1  # failures older than the window are forgotten (and pruned)
    lim.failed(conn, "10.0.0.1", "bob")
    assert conn.execute("SELECT count(*) FROM login_failures").fetchone()[0] == 2


# ------------------------------------------------------------ finding 11: session lifetime


def test_a_session_ends_at_its_lifetime_however_busy(web, monkeypatch):
    """Used (and changed: every POST re-signs the cookie) every hour, the session
    still ends 12 h after the login."""
    app, _, _ = web
    c = logged_in_client(app)
    real = time.time
    start = real()
    lifetime = app.permanent_session_lifetime
    assert lifetime == timedelta(hours=12)
    for hour in range(1, 12):
        monkeypatch.setattr(time, "time", lambda h=hour: start + h * 3600 + (real() - start))
        assert c.get("/hosts/").status_code == 200, hour
        r = post_form(c, "/hosts/_new", {"name": f"node-{hour}", "macs": f"52:54:00:00:00:{hour:02x}",
                                         "flake": "github:example/fleet", "mode": "netboot"},
                      page="/hosts/")
        assert r.status_code == 302 and "Set-Cookie" in r.headers, hour  # re-signed now
    monkeypatch.setattr(time, "time", lambda: start + lifetime.total_seconds() + 60)
    r = c.get("/hosts/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert c.get("/api/v1/hosts").status_code == 401


def test_a_session_from_before_this_version_is_no_session(web):
    """A cookie without the login time (signed with the right key) is refused."""
    app, store, _ = web
    logged_in_client(app)
    c = app.test_client()
    ser = app.session_interface.get_signing_serializer(app)
    c.set_cookie("nixie_session", ser.dumps({"uid": 1, "user": "admin"}))
    assert c.get("/hosts/").status_code == 302


# ------------------------------------------------------------ finding 11: /healthz


def test_healthz_tells_anonymous_only_ok(tmp_path):
    app, store, _ = make_app(tmp_path / "state", health=_health_with_error)
    try:
        c = logged_in_client(app)
        anon = app.test_client()
        r = anon.get("/healthz")
        assert r.status_code == 503 and r.json == {"ok": False}
        assert "port 67" not in r.text
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json["services"]["dhcp"]["error"].endswith("in use")
        uid = store.conn().execute("SELECT id FROM users").fetchone()[0]
        _, secret = apitokens.create_token(store.conn(), uid, "monitor")
        r = anon.get("/healthz", headers={"Authorization": f"Bearer {secret}"})
        assert r.json["services"]["dhcp"]["restarts"] == 3
        r = anon.get("/healthz", headers={"Authorization": "Bearer nixie_wrong"})
        assert r.json == {"ok": False}
    finally:
        store.close()


# ------------------------------------------------------------ finding 11: nested JSON

NESTED = "[" * 10_000 + "]" * 10_000


def _api_client(app, store):
    logged_in_client(app)
    uid = store.conn().execute("SELECT id FROM users").fetchone()[0]
    _, secret = apitokens.create_token(store.conn(), uid, "import")
    return app.test_client(), {"Authorization": f"Bearer {secret}"}


def test_a_deeply_nested_hosts_json_is_a_400(web):
    app, store, _ = web
    c, auth = _api_client(app, store)
    for body in (NESTED, '{"h": ' + NESTED + "}"):
        r = c.post("/api/v1/hosts-json", data=body, headers=auth, content_type="application/json")
        assert r.status_code == 400, r.text[:300]
        assert "nested too deeply" in r.json["error"] or "must be" in r.json["error"]
    r = c.post("/api/v1/hosts-json", data=NESTED, headers=auth, content_type="application/json")
    assert "nested too deeply" in r.json["error"]
    # every JSON body of the API: a 400, not a 500
    r = c.post("/api/v1/hosts", data=NESTED, headers=auth, content_type="application/json")
    assert r.status_code == 400 and "JSON object" in r.json["error"]
    # the import form of the web UI: refused with the reason, nothing imported
    ui = logged_in_client_again(app)
    token = csrf_of(ui.get("/hosts/").data)
    r = ui.post("/hosts/_import", data={"csrf_token": token,
                                        "file": (BytesIO(NESTED.encode()), "hosts.json")},
                follow_redirects=True)
    assert r.status_code == 200 and "nested too deeply" in r.text
    assert store.conn().execute("SELECT count(*) FROM hosts").fetchone()[0] == 0


def logged_in_client_again(app):
    c = app.test_client()
    assert _login(c, PASSWORD).status_code == 302
    return c


# ------------------------------------------------------------ finding 13: the setup code


def test_the_wizard_without_the_setup_code_makes_no_admin(web):
    app, store, cfg = web
    code = setup_code_of(app)
    path = setupcode.code_path(cfg.state_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    c = client_at(app, ATTACKER)
    page = c.get("/setup").text
    assert 'name="setup_code"' in page and f"{cfg.state_dir}/setup_code" in page
    for wrong in ("", "AAAA-BBBB-CCCC", code[:-1]):
        r = post_form(c, "/setup", {**setup_answers(app), "setup_code": wrong})
        assert r.status_code == 400, wrong
        assert users.count_users(store.conn()) == 0 and not settings.is_setup_complete(store.conn())
    assert "setup code is wrong" in r.text
    kinds = [r[0] for r in store.conn().execute("SELECT kind FROM events")]
    assert kinds.count("setup.code_refused") == 2  # the empty one is a form error
    # the right code, typed in lower case with spaces, makes the admin
    admin = client_at(app, ADMIN)
    r = post_form(admin, "/setup", setup_answers(app, setup_code=code.lower().replace("-", " ")))
    assert r.status_code == 302 and users.count_users(store.conn()) == 1
    assert admin.get("/").status_code == 200
    # used up: gone from the state dir and the DB; a restart issues no new one
    assert not path.exists() and not setupcode.outstanding(store.conn())
    assert settings.issue_setup_code(store.conn(), cfg.state_dir) is None and not path.exists()
    with pytest.raises(Exception, match="no setup code"):
        setupcode.check(store.conn(), code)


def test_wrong_setup_codes_are_throttled_per_address(web):
    app, store, _ = web
    c = client_at(app, ATTACKER)
    statuses = [post_form(c, "/setup", setup_answers(app, setup_code="AAAA-AAAA-AAAA")).status_code
                for _ in range(LoginLimits.free + 1)]
    assert statuses == [400] * LoginLimits.free + [429]
    # the admin at another address is not slowed
    r = post_form(client_at(app, ADMIN), "/setup", setup_answers(app))
    assert r.status_code == 302 and users.count_users(store.conn()) == 1


def test_a_lost_setup_code_file_is_replaced_at_the_next_start(web):
    app, store, cfg = web
    old = setup_code_of(app)
    assert settings.issue_setup_code(store.conn(), cfg.state_dir) is None  # still readable
    setupcode.code_path(cfg.state_dir).unlink()
    new = settings.issue_setup_code(store.conn(), cfg.state_dir)
    assert new and new != old and setup_code_of(app) == new
    c = app.test_client()
    assert post_form(c, "/setup", setup_answers(app, setup_code=old)).status_code == 400
    assert post_form(c, "/setup", setup_answers(app)).status_code == 302


def test_an_admin_made_with_the_cli_retires_the_setup_code(web):
    app, store, cfg = web
    users.create_user(store.conn(), "ops", PASSWORD)  # `nixie admin create-user`, on the box
    assert settings.issue_setup_code(store.conn(), cfg.state_dir) is None
    assert not setupcode.code_path(cfg.state_dir).exists()
    assert not setupcode.outstanding(store.conn())


def test_nixie_status_says_setup_is_pending_but_not_the_code(config_file):
    cfg = load_config(config_file)
    store = Store(cfg.db_path)
    try:
        code = settings.issue_setup_code(store.conn(), cfg.state_dir)  # as serve does at start
        human = run_nixie("status", config=config_file)
        assert human.returncode == 0, human.stderr
        assert "setup: pending" in human.stdout and f"{cfg.state_dir}/setup_code" in human.stdout
        as_json = run_nixie("--json", "status", config=config_file)
        assert json.loads(as_json.stdout)["setup"] == {
            "pending": True, "setup_code_file": f"{cfg.state_dir}/setup_code"}
        for out in (human.stdout, as_json.stdout):
            assert code not in out and setupcode.normalise(code) not in out
        users.create_user(store.conn(), "ops", PASSWORD)
        assert json.loads(run_nixie("--json", "status", config=config_file).stdout)["setup"] == {
            "pending": False}
    finally:
        store.close()


def test_listeners_follow_the_lan_address_never_every_address():
    cfg = parse_config({"lan": {"address": "192.168.50.1/24"},
                        "dhcp": {"range": ["192.168.50.100", "192.168.50.199"]}})
    assert (cfg.web.listen, cfg.boot.http_listen, cfg.tftp.listen, cfg.dns.listen) == (
        ["192.168.50.1:8080"], "192.168.50.1:8081", ["192.168.50.1:69"], ["192.168.50.1:53"])
    assert cfg.boot_base_url == "http://192.168.50.1:8081"
    # the network settings move the LAN: listeners left to the default move with it
    moved = resolve(cfg, {"dhcp.range": ["192.168.60.100", "192.168.60.199"]},
                    {"lan_interface": "eth1", "lan_address": "192.168.60.1/24",
                     "wan_mode": "none"})
    assert moved.web.listen == ["192.168.60.1:8080"] and moved.dns.listen == ["192.168.60.1:53"]
    # a listener the file names is kept as it is
    given = parse_config({"web": {"listen": ["0.0.0.0:8080"]}})
    assert given.web.listen == ["0.0.0.0:8080"] and given.tftp.listen == ["10.0.0.1:69"]
