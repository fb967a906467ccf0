"""The HTTP boot app over the appliance's real SqliteBackend: agent API statuses,
host scripts for modes, events in the DB; plus a fuzz of request paths."""

from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.domain import agent, events, hosts
from appliance.domain.boot_backend import SqliteBackend
from appliance.state import db
from netservices.httpboot import BootSettings, NoArtifacts, create_boot_app
from tests.unit.test_httpboot import call

BASE = "http://10.0.0.1:8081"


def make_app(tmp_path, **kw):
    store = db.Store(tmp_path / "nixie.db")
    backend = SqliteBackend(store)
    tftp = tmp_path / "tftp"
    tftp.mkdir(exist_ok=True)
    app = create_boot_app(hosts=backend, events=backend, artifacts=NoArtifacts(), agent=backend,
                          settings=BootSettings(BASE, **kw), tftp_root=str(tftp))
    return app, store


def test_agent_api_over_sqlite_backend(tmp_path):
    app, store = make_app(tmp_path)
    conn = store.conn()
    h = hosts.add_host(conn, "web1", ["bc:24:11:00:00:01"], "github:me/infra", mode="install")
    # issued to the address call() requests from, as if it had fetched the install script
    token = agent.issue_token(conn, h["id"], None, client_ip="10.0.0.50", purpose="install")

    def post(body, tok=token, in_body=False):
        headers = {} if in_body else {"Authorization": f"Bearer {tok}"}
        if in_body:
            body = {**body, "token": tok}
        status, _, out = call(app, "/api/v1/agent/events", "POST", body=json.dumps(body).encode(),
                              headers=headers)
        return status, json.loads(out)

    assert post({"event": "booted"}, tok="wrong")[0] == 401
    assert post({"event": "booted"}, tok="wrong", in_body=True)[0] == 401
    assert post({"event": "nonsense"})[0] == 400
    assert post({"event": "installed"})[0] == 409  # unknown -> installed is not allowed
    assert post({"event": "installing", "message": "disko"}) == (
        200, {"host": "web1", "state": "installing", "ip": "10.0.0.50"})
    # wget's way: no header, the token in the body
    assert post({"event": "installing", "message": "copy"}, in_body=True)[0] == 200
    got = hosts.get_host(conn, "web1")
    assert got["state"] == "installing" and got["ip"] == "10.0.0.50"


def test_scripts_over_sqlite_backend(tmp_path):
    app, store = make_app(tmp_path, unknown_clients="local")
    conn = store.conn()
    hosts.add_host(conn, "n1", ["bc:24:11:00:00:02"], "github:me/infra")
    hosts.add_host(conn, "disk", ["bc:24:11:00:00:03"], "github:me/infra", mode="local")
    status, _, body = call(app, "/boot/bc-24-11-00-00-02.ipxe")
    assert status == 200 and "no system built yet" in body.decode() and "sleep" in body.decode()
    assert "sanboot" in call(app, "/boot/bc:24:11:00:00:03.ipxe")[2].decode()
    assert "sanboot" in call(app, "/boot/bc:24:11:00:00:99.ipxe")[2].decode()
    rows = events.recent(conn, kind="boot.script", limit=10)
    assert len(rows) == 3 and {r["mac"] for r in rows} == {
        "bc:24:11:00:00:02", "bc:24:11:00:00:03", "bc:24:11:00:00:99"}


_path_chars = st.sampled_from(list("abc./%2e%2f-_:") + ["..", "/", "ipxe", "boot", "dispatch",
                                                        "escape", "secret", "kernel", "\\"])


def test_no_path_reaches_outside_or_breaks(tmp_path):
    app, _ = make_app(tmp_path)
    (tmp_path / "secret").write_text("SECRET-BYTES")
    os.symlink(tmp_path / "secret", tmp_path / "tftp" / "escape")

    @settings(max_examples=300, deadline=None)
    @given(st.lists(_path_chars, max_size=12), st.sampled_from(["GET", "HEAD", "POST", "PUT"]))
    def check(parts, method):
        status, _, body = call(app, "/" + "".join(parts), method)
        assert status in (200, 400, 401, 403, 404, 405, 503)
        assert b"SECRET-BYTES" not in body

    check()
