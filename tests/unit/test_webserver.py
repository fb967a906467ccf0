"""The web UI's hosting: how many workers, the listeners serve binds for them,
the health a worker reports, and a change seen by the admin who made it."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from appliance.config.schema import load_config
from appliance.domain import apitokens, users
from appliance.runtime import webserver
from appliance.state.db import Store
from appliance.state.status import write_status
from tests.conftest import wait_for
from tests.netns.serve_lab import pid_alive
from tests.webapp import PASSWORD, logged_in_client, make_app, post_form
from webui import fragments


def test_worker_count_auto_is_cpus_capped(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert webserver.worker_count(0) == webserver.MAX_AUTO_WORKERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
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


UNVERIFIED = ssl._create_unverified_context()  # the self-signed certificate of the test's state dir


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    """GET a JSON answer; with an API token, /healthz shows the services."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=UNVERIFIED) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class RunningWebWorkers:
    """`workers` web worker processes (WebWorkers, run in a thread as serve runs
    it) on a free loopback port, with a stored health of serve's."""

    def __init__(self, config_file, workers: int = 2):
        data = json.loads(config_file.read_text())
        self.port = _free_tcp_port()
        data["web"]["listen"] = [f"127.0.0.1:{self.port}"]
        config_file.write_text(json.dumps(data))
        cfg = load_config(config_file)
        store = Store(cfg.db_path)
        _status(store)
        uid = users.create_user(store.conn(), "admin", PASSWORD)
        _, self.token = apitokens.create_token(store.conn(), uid, "health")
        webserver.secret_key(cfg)  # made in serve, before the workers read it
        webserver.prepare_tls(cfg)  # so is the certificate
        self.web = webserver.WebWorkers(cfg, workers)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.web.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> RunningWebWorkers:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.web.shutdown()
        self.thread.join(10)

    def healthy(self) -> bool:
        """/healthz answered 200 with the stored health."""
        try:
            status, health = _get(f"https://127.0.0.1:{self.port}/healthz", self.token)
        except OSError:  # a worker still starting: its socket queues, the connect waits
            return False
        return status == 200 and health["services"]["dhcp"]["state"] == "running"


def test_web_workers_answer_with_the_stored_health_and_stop_with_the_service(config_file):
    """Two worker processes answer /healthz on the socket the service bound, with
    the health serve stored; a killed one is replaced, and shutdown ends them all."""
    with RunningWebWorkers(config_file) as run:
        web, port, healthy = run.web, run.port, run.healthy
        assert wait_for(lambda: web.stats()["alive"] == 2, timeout=30), web.stats()
        pids = web.stats()["pids"]
        assert os.getpid() not in pids
        assert wait_for(healthy, timeout=30)
        os.kill(pids[0], signal.SIGKILL)
        assert wait_for(lambda: web.stats()["restarts"] == 1 and web.stats()["alive"] == 2,
                        timeout=30)
        assert pids[0] not in web.stats()["pids"] and pids[1] in web.stats()["pids"]
        assert all(healthy() for _ in range(4))
        pids = web.stats()["pids"]
    assert not run.thread.is_alive()
    assert not [p for p in pids if pid_alive(p)]
    with pytest.raises(OSError):  # the listener is closed with the service
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# waitress's default connection_limit: a worker holding this many connections
# stops accepting until one ends
WAITRESS_CONNECTION_LIMIT = 100


def test_web_workers_answer_while_slow_clients_hold_connections(config_file):
    """Slow clients (half a request, or nothing at all) hold more connections than
    one worker takes: the other worker, waiting on the same socket, takes the rest,
    and every worker still answers a whole request at once. Each slow client has an
    address of its own (127.0.1.x): from the checker's own address they would meet
    the per-client cap, whatever worker took them (test_web_hardening tests that cap)."""
    with RunningWebWorkers(config_file) as run:
        assert wait_for(run.healthy, timeout=30)
        slow: list[socket.socket] = []
        try:
            for i in range(WAITRESS_CONNECTION_LIMIT * 3 // 2):
                s = socket.create_connection(("127.0.0.1", run.port), timeout=10,
                                             source_address=(f"127.0.1.{i + 1}", 0))
                slow.append(s)
                if i % 2:  # headers begun and never ended
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: nixie\r\nX-Slow: ")
            assert all(run.healthy() for _ in range(8))
            assert run.web.stats()["alive"] == 2 and run.web.stats()["restarts"] == 0
        finally:
            for s in slow:
                s.close()
        assert run.healthy()
    assert not run.thread.is_alive()


def test_admin_sees_own_change_through_another_workers_cache(tmp_path, monkeypatch):
    """Two apps over one DB stand for two web worker processes: the hosts table
    the second one cached is not what the admin who just added a host through
    the first one is shown."""
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
