"""Building the web app over a fresh state dir, and a test client that speaks CSRF,
for the web UI tests (unit tier: Flask's test client; the browser tier runs the
real `nixie serve`)."""

from __future__ import annotations

import re

from appliance.config.schema import example_config, parse_config
from appliance.domain import settings, setupcode
from appliance.state.db import Store

PASSWORD = "correct horse battery"


def make_app(state_dir, health=None, *, locked=(), path=None, sections=None):
    """The web app over a fresh state dir; its config file (named `path`) pins
    the keys `locked`; `sections` ({section: {key: value}}) are set in it."""
    data = example_config(state_dir=str(state_dir), interface="lo", address="127.0.0.1/8")
    data["dhcp"]["range"] = ["127.0.0.100", "127.0.0.199"]
    data["locked"] = list(locked)
    for section, keys in (sections or {}).items():
        data.setdefault(section, {}).update(keys)
    cfg = parse_config(data, path)
    app, store = app_over(cfg, health)
    return app, store, cfg


def app_over(cfg, health=None):
    """(the web app, its store) over the state of `cfg`: the state dir may be the one a
    running `nixie serve` uses, as the web worker it forks would."""
    from webui import create_app
    from webui.app import WebContext

    store = Store(cfg.db_path)
    health = health or (lambda: {"ok": True, "services": {"web": {"state": "running", "restarts": 0}}})
    settings.issue_setup_code(store.conn(), cfg.state_dir)  # what `nixie serve` does at start
    app = create_app(WebContext(store=store, config=cfg, health=health, secret_key=b"k" * 32))
    app.testing = True
    return app, store


def setup_code_of(app) -> str:
    """The one-time setup code, read where the admin reads it: state_dir/setup_code."""
    return setupcode.code_path(app.extensions["nixie"].config.state_dir).read_text().strip()


def csrf_of(html: bytes | str) -> str:
    text = html.decode() if isinstance(html, bytes) else html
    m = re.search(r'name="csrf-token" content="([^"]+)"', text) or \
        re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', text)
    assert m, "page carries no CSRF token"
    return m.group(1)


def post_form(client, path, data, *, page=None):
    """POST a form like a browser: fetch a page for the CSRF token first."""
    token = csrf_of(client.get(page or path).data)
    return client.post(path, data={**data, "csrf_token": token})


def setup_answers(app, **over):
    """The wizard's answers, with the setup code read from the state dir unless given."""
    d = dict(setup_code=over.pop("setup_code", None) or setup_code_of(app), username="admin", password=PASSWORD, password2=PASSWORD, lan_interface="lo",
             wan_interface="", dhcp_mode="authoritative", dhcp_first="127.0.0.100",
             dhcp_last="127.0.0.199", builder_kind="local", builder_uri="")
    d.update(over)
    return d


def set_up(client):
    r = post_form(client, "/setup", setup_answers(client.application))
    assert r.status_code == 302, r.data[:500]
    return r


def logged_in_client(app):
    c = app.test_client()
    set_up(c)
    return c
