"""Settings through the API and the Settings page: keys the deployment locks are
shown read-only and refused; a save says what the running `nixie serve` did with
it, or that it applies when serve starts.

"Serve" here is the real config applier over the real Runtime, under a supervisor
with a heartbeat in the DB (tests/applier_lab.py), applying to a stand-in DHCP
service; the effect on real DHCP clients is tested in the netns and browser tiers."""

from __future__ import annotations

import json
import re
import threading

import pytest

from appliance.domain import settings
from appliance.state import kv
from appliance.state.db import now
from tests.applier_lab import applying, runtime_with
from tests.webapp import PASSWORD, csrf_of, logged_in_client, make_app, post_form, setup_code_of

CONFIG_PATH = "/etc/nixie/config.json"
LOCKED = ["dhcp.lease_seconds", "builder.substituters"]


@pytest.fixture
def locked_web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state", locked=LOCKED, path=CONFIG_PATH)
    client = logged_in_client(app)
    yield store, cfg, client, {"X-CSRFToken": csrf_of(client.get("/").data)}
    store.close()


def settings_form(client) -> dict[str, str]:
    """The Settings form as a browser submits it: every enabled field, as shown."""
    page = client.get("/settings/").data.decode()
    form = {}
    for m in re.finditer(r"<(input|select|textarea)\b([^>]*)>", page):
        attrs = m.group(2)
        name = re.search(r'\bname="([^"]+)"', attrs)
        if not name or " disabled" in attrs or name.group(1) in ("q", "csrf_token"):
            continue
        if m.group(1) == "input":
            if 'type="checkbox"' in attrs:
                if " checked" in attrs:
                    form[name.group(1)] = "y"
                continue
            value = re.search(r'\bvalue="([^"]*)"', attrs)
            form[name.group(1)] = value.group(1) if value else ""
        elif m.group(1) == "select":
            rest = page[m.end():page.index("</select>", m.end())]
            form[name.group(1)] = re.search(r'<option selected value="([^"]*)"|'
                                            r'<option value="([^"]*)" selected', rest).group(1)
        else:
            form[name.group(1)] = page[m.end():page.index("</textarea>", m.end())].strip()
    return form


def test_patch_refuses_a_locked_key_and_names_it(locked_web):
    store, cfg, client, csrf = locked_web
    r = client.get("/api/v1/settings")
    assert r.status_code == 200
    assert r.json["locked"] == {k: CONFIG_PATH for k in LOCKED}
    assert r.json["values"]["dhcp.lease_seconds"] == cfg.dhcp.lease_seconds
    for key, value in (("dhcp.lease_seconds", 600), ("builder.substituters", ["https://c.example"])):
        r = client.patch("/api/v1/settings", json={key: value, "boot.menu_timeout_seconds": 9},
                         headers=csrf)
        assert r.status_code == 400 and r.json["field"] == key, r.json
        assert CONFIG_PATH in r.json["error"]
    # all or nothing: the unlocked key sent with it was not stored either
    assert settings.overrides(store.conn()) == {}
    assert client.get("/api/v1/settings").json["values"]["boot.menu_timeout_seconds"] == \
        cfg.boot.menu_timeout_seconds


def test_patch_without_serve_says_it_applies_when_serve_starts(locked_web):
    store, cfg, client, csrf = locked_web
    r = client.patch("/api/v1/settings", json={"boot.menu_timeout_seconds": 9}, headers=csrf)
    assert r.status_code == 200, r.json
    assert r.json["values"]["boot.menu_timeout_seconds"] == 9
    assert r.json["locked"] == {k: CONFIG_PATH for k in LOCKED}
    assert r.json["apply"] is None
    assert r.json["message"] == "Saved; applies when nixie serve starts."
    # a heartbeat from a serve that stopped, or one long silent, is not a running serve
    for state, age in (("stopped", 0), ("running", 60)):
        kv.put(store.conn(), "serve.status", {"pid": 1, "ts": now() - age, "state": state,
                                              "ok": True, "services": {}})
        r = client.patch("/api/v1/settings", json={"boot.menu_timeout_seconds": 10 + age},
                         headers=csrf)
        assert r.json["apply"] is None and "applies when nixie serve starts" in r.json["message"]
    r = client.patch("/api/v1/settings", json={"boot.menu_timeout_seconds": 70}, headers=csrf)
    assert r.json["message"] == "Settings saved; nothing changed."


def test_settings_page_shows_locked_keys_read_only_and_keeps_them(locked_web):
    store, cfg, client, _ = locked_web
    page = client.get("/settings/").data.decode()
    lease = re.search(r'<input[^>]*id="dhcp_lease_seconds"[^>]*>', page).group(0)
    assert " disabled" in lease and f'value="{cfg.dhcp.lease_seconds}"' in lease
    subst = re.search(r'<textarea[^>]*id="builder_substituters"[^>]*>', page).group(0)
    assert " disabled" in subst
    assert page.count(f"set by <code>{CONFIG_PATH}</code>") == 2
    assert " disabled" not in re.search(r'<input[^>]*id="boot_cmdline"[^>]*>', page).group(0)
    # a browser does not submit disabled fields; a forged value for one is ignored
    form = settings_form(client)
    assert "dhcp_lease_seconds" not in form and "builder_substituters" not in form
    form.update(boot_cmdline="console=ttyS1", dhcp_lease_seconds="60")
    r = post_form(client, "/settings/", form)
    assert r.status_code == 302, r.data.decode()[:2000]
    page = client.get("/settings/").data.decode()
    assert 'value="console=ttyS1"' in re.search(r'<input[^>]*id="boot_cmdline"[^>]*>', page).group(0)
    lease = re.search(r'<input[^>]*id="dhcp_lease_seconds"[^>]*>', page).group(0)
    assert f'value="{cfg.dhcp.lease_seconds}"' in lease
    assert '<div class="flash flash-info" role="status">Saved; applies when nixie serve starts.' in page
    # and what serve starts with: its Runtime resolves the same
    started = runtime_with(cfg, store).cfg
    assert started.boot.cmdline == "console=ttyS1"
    assert started.dhcp.lease_seconds == cfg.dhcp.lease_seconds


def test_the_wizard_leaves_locked_keys_to_the_file(tmp_path):
    app, store, cfg = make_app(tmp_path / "state", locked=["lan.interface", "dhcp.range"],
                               path=CONFIG_PATH)
    try:
        c = app.test_client()
        page = c.get("/setup").data.decode()
        assert " disabled" in re.search(r'<input[^>]*id="lan_interface"[^>]*>', page).group(0)
        assert page.count(f"set by <code>{CONFIG_PATH}</code>") == 3  # interface, first, last
        token = csrf_of(page)
        r = c.post("/setup", data={"csrf_token": token, "setup_code": setup_code_of(app),
                                   "username": "admin",
                                   "password": "correct horse battery",
                                   "password2": "correct horse battery", "dhcp_mode": "proxy",
                                   "builder_kind": "local", "lan_interface": "forged0"})
        assert r.status_code == 302, r.data.decode()[:2000]
        started = runtime_with(cfg, store).cfg  # what serve builds its services from
        assert started.lan.interface == "lo" and started.dhcp.mode == "proxy"
        assert "Saved; applies when nixie serve starts." in c.get(r.headers["Location"]).data.decode()
    finally:
        store.close()


def test_patch_refuses_a_huge_body_and_forged_or_replayed_csrf_tokens(locked_web):
    store, cfg, client, csrf = locked_web
    before = client.get("/api/v1/settings").json
    huge = json.dumps({"boot.cmdline": "x" * (9 << 20)})  # over the 8 MB body limit
    r = client.patch("/api/v1/settings", data=huge, content_type="application/json", headers=csrf)
    assert r.status_code == 413 and r.json["error"].startswith("request body too large")
    # the token of another session (replayed), a made-up one, none
    other = client.application.test_client()
    assert post_form(other, "/login", {"username": "admin", "password": PASSWORD}).status_code == 302
    for headers in ({"X-CSRFToken": csrf_of(other.get("/").data)}, {"X-CSRFToken": "forged"}, {}):
        r = client.patch("/api/v1/settings", json={"boot.menu_timeout_seconds": 9}, headers=headers)
        assert r.status_code == 400 and "CSRF" in r.json["error"], (headers, r.json)
    assert client.get("/api/v1/settings").json == before
    kinds = [row[0] for row in store.conn().execute("SELECT kind FROM events")]
    assert not [k for k in kinds if k.startswith("settings.")], kinds


# ---------------------------------------------------------------- with the applier running


class StandInDhcp:
    """A service the applier can retune (in place) or rebuild."""

    name = "dhcp"

    def __init__(self, cfg):
        self.cfg = cfg

    def run(self, stop: threading.Event) -> None:
        stop.wait()


def build_dhcp(c):
    if c.lan.interface == "nope0":
        raise OSError("cannot bind nope0")
    return StandInDhcp(c)


def retune_dhcp(svc, c) -> bool:
    if c.lan.interface != svc.cfg.lan.interface:
        return False  # a new socket: rebuild
    svc.cfg = c
    return True


@pytest.fixture
def serving(tmp_path):
    """The web app and, on the same state, serve's config applier with a fresh heartbeat."""
    app, store, cfg = make_app(tmp_path / "state")
    client = logged_in_client(app)
    runtime = runtime_with(cfg, store, dhcp=(build_dhcp, retune_dhcp))
    try:
        with applying(runtime, heartbeat=True) as sup:
            yield store, cfg, client, {"X-CSRFToken": csrf_of(client.get("/").data)}, sup
    finally:
        store.close()


def test_a_save_reports_what_serve_applied_or_refused(serving):
    store, cfg, client, csrf, sup = serving
    r = client.patch("/api/v1/settings", json={"dhcp.lease_seconds": 600}, headers=csrf)
    assert r.status_code == 200
    assert r.json["apply"]["ok"] and r.json["apply"]["services"] == ["dhcp"]
    assert r.json["apply"]["changed"] == {"dhcp.lease_seconds": [cfg.dhcp.lease_seconds, 600]}
    assert r.json["message"] == "Saved and applied to the running services: dhcp."
    assert sup.get("dhcp").cfg.dhcp.lease_seconds == 600
    # the page: a value the service cannot take is saved, not applied, and said so
    form = settings_form(client)
    form["lan_interface"] = "nope0"
    r = post_form(client, "/settings/", form)
    assert r.status_code == 302
    page = client.get("/settings/").data.decode()
    flash = re.search(r'<div class="flash flash-(\w+)" role="status">([^<]*)</div>', page)
    assert flash.group(1) == "error", page
    assert flash.group(2) == ("Saved, but not applied: dhcp: OSError: cannot bind nope0. "
                              "The previous value keeps running.")
    assert sup.get("dhcp").cfg.lan.interface == "lo"  # the previous one runs on
