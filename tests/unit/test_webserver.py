"""The web UI's hosting: how many workers, the listeners serve binds for them,
the health a worker reports, and a change seen by the admin who made it."""

from __future__ import annotations

import socket
import time

import pytest

from appliance.runtime import webserver
from appliance.state.db import Store
from appliance.state.status import write_status


def test_worker_count_auto_is_cpus_capped(monkeypatch):
    monkeypatch.setattr(webserver.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert webserver.worker_count(0) == webserver.MAX_AUTO_WORKERS
    monkeypatch.setattr(webserver.os, "sched_getaffinity", lambda _pid: {0})
    assert webserver.worker_count(0) == 1
    assert webserver.worker_count(3) == 3


def test_bind_listeners_all_or_none():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        probe.listen()
        taken = probe.getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        with pytest.raises(OSError):
            webserver.bind_listeners([f"127.0.0.1:{free}", f"127.0.0.1:{taken}"])
        # the first one was closed again: it can be bound now
        socks = webserver.bind_listeners([f"127.0.0.1:{free}", "[::1]:0"])
        try:
            assert socks[0].getsockname()[:2] == ("127.0.0.1", free)
            assert socks[1].family == socket.AF_INET6
            assert socks[1].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        finally:
            for s in socks:
                s.close()


def _status(store, state="running", **kw):
    write_status(store, {"ok": True, "services": {"dhcp": {"state": "running"}}, **kw}, state=state)


def test_stored_health(tmp_path):
    store = Store(tmp_path / "s.db")
    h = webserver.stored_health(store, 6)
    assert h["ok"] is False and "not reported" in h["error"]
    _status(store)
    h = webserver.stored_health(store, 6)
    assert h["ok"] is True and h["services"]["dhcp"]["state"] == "running"
    _status(store, ts=time.time() - 60)
    h = webserver.stored_health(store, 6)
    assert h["ok"] is False and "not reported for 60 s" in h["error"]
    _status(store, state="stopped")
    assert webserver.stored_health(store, 6)["ok"] is False
    _status(store, ok=False)
    assert webserver.stored_health(store, 6)["ok"] is False


def test_admin_sees_own_change_through_another_workers_cache(tmp_path, monkeypatch):
    """Two apps over one DB stand for two web worker processes: the hosts table
    the second one cached is not what the admin who just added a host through
    the first one is shown."""
    from tests.webapp import logged_in_client, make_app, post_form
    from webui import fragments

    # the cached table must still be fresh when it is asked again, however slow this run
    monkeypatch.setattr(fragments, "FRESH_SECONDS", 60.0)

    first, _store, _ = make_app(tmp_path)
    second, _store2, _ = make_app(tmp_path)
    c1 = logged_in_client(first)
    c2 = second.test_client()

    def same_session():
        c2.set_cookie("nixie_session", c1.get_cookie("nixie_session").value)

    same_session()
    assert c2.get("/hosts/").status_code == 200  # the second worker caches the table
    r = post_form(c1, "/hosts/_new", {"name": "node-new", "macs": "52:54:00:aa:bb:01",
                                      "flake": "github:example/fleet", "mode": "netboot"})
    assert r.status_code == 302, r.text[:300]
    row = 'href="/hosts/node-new"'
    # without the mark (another admin) the second worker answers from its cache...
    c3 = second.test_client()
    c3.set_cookie("nixie_session", _session_without_mark(second, c1))
    assert row not in c3.get("/hosts/").text
    # ...the admin who added the host is shown it by either worker
    same_session()
    assert row in c2.get("/hosts/").text

def _session_without_mark(app, client) -> str:
    """client's session cookie, minus the 'changed' mark, signed like the app does."""
    si = app.session_interface
    ser = si.get_signing_serializer(app)
    data = ser.loads(client.get_cookie("nixie_session").value)
    data.pop("changed_at", None)
    data.pop("_flashes", None)
    return ser.dumps(data)
