"""Every route of the app: none answers without login (but the public ones),
every unsafe method refuses a request without a CSRF token."""

from __future__ import annotations

import re

import pytest

from tests.webapp import logged_in_client, make_app

# reachable without a session: health, static files, the login page and the
# wizard (which only redirects to /login once setup is done)
PUBLIC = {"healthz", "static", "auth.login", "setup.wizard",
          "metrics.metrics"}  # source address and token: tests/unit/test_metrics.py
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
SIGNED_NOT_SESSION = {"api.flake_hook"}  # a forge's webhook: verified by its signature


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, store, _ = make_app(tmp_path_factory.mktemp("crawl") / "state")
    c = logged_in_client(app)
    # something to point the routes at
    from appliance.domain import builds, flakes, hosts

    conn = store.conn()
    hosts.add_host(conn, "demo", "52:54:00:00:00:01", "/srv/fleet")
    flakes.add_flake(conn, "/srv/fleet")
    builds.enqueue(conn, "demo")
    yield app, c
    store.close()


def concrete(rule) -> str:
    url = rule.rule
    for arg in rule.arguments:
        value = "1" if re.search(rf"<int:{arg}>", url) else ("app.css" if arg == "filename" else "demo")
        url = re.sub(rf"<(?:\w+:)?{arg}>", value, url)
    return url


def routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_no_route_without_login(app):
    flask_app, _ = app
    anon = flask_app.test_client()
    checked = 0
    for rule, method in routes(flask_app):
        if rule.endpoint in PUBLIC:
            continue
        url = concrete(rule)
        r = anon.open(url, method=method)
        checked += 1
        if rule.rule.startswith("/api/"):
            assert r.status_code in (401, 400), f"{method} {url} -> {r.status_code}"
            if r.status_code == 400:  # unsafe API method: refused by the CSRF check first
                assert method in UNSAFE and "CSRF" in r.json["error"]
        else:
            assert r.status_code in (302, 400), f"{method} {url} -> {r.status_code}"
            if r.status_code == 302:
                assert "/login" in r.headers["Location"], f"{method} {url}"
            else:
                assert method in UNSAFE and b"CSRF" in r.data
        assert b"demo" not in r.data or r.status_code == 302 and b"/login" in r.data
    assert checked > 30


def test_public_routes_are_only_those(app):
    flask_app, _ = app
    anon = flask_app.test_client()
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/static/app.css").status_code == 200
    assert anon.get("/login").status_code == 200
    assert anon.get("/setup").status_code == 302  # setup is done: to the login page
    # /metrics: no login, but only from the LAN/VPN (tests/unit/test_metrics.py)
    assert anon.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.1"}).status_code == 403


def test_every_unsafe_method_needs_csrf(app):
    flask_app, client = app
    checked = 0
    for rule, method in routes(flask_app):
        if method not in UNSAFE:
            continue
        url = concrete(rule)
        r = client.open(url, method=method, data={"name": "x"})
        checked += 1
        if rule.endpoint in SIGNED_NOT_SESSION:  # no session, no CSRF: its signature or 401
            assert r.status_code == 401, f"{method} {url} -> {r.status_code}"
            continue
        assert r.status_code == 400, f"{method} {url} -> {r.status_code}"
        body = r.get_data(as_text=True)
        assert "CSRF" in body, f"{method} {url}"
    assert checked > 15
    # the logged-in session still works: nothing was changed by those requests
    assert client.get("/hosts/demo").status_code == 200
