"""Install to disk, the router's side: the installer's reports move the host
installing -> installed (mode local), the `installed` answer carries the disk token,
and the system booted from its disk reports `booted` with boot mode `local` with it,
only from the host's own address. Through `SqliteBackend.agent_report`, the AgentSink
the HTTP boot server calls."""

from __future__ import annotations

import pytest

from appliance.domain import agent, hosts, localboot
from appliance.domain.boot_backend import SqliteBackend
from appliance.state import db
from appliance.state.db import Store, now

MAC = "bc:24:11:00:00:01"
IP = "10.77.0.150"


@pytest.fixture
def backend(tmp_path):
    store = Store(tmp_path / "nixie.db")
    conn = store.conn()
    hosts.add_host(conn, "web1", [MAC], "f", mode="install")
    t = now()
    conn.execute("INSERT INTO leases (ip, mac, state, starts, expires, updated_at) "
                 "VALUES (?,?,?,?,?,?)", (IP, MAC, "bound", t, t + 3600, t))
    return SqliteBackend(store)


def _install(backend) -> str:
    conn = backend.store.conn()
    h = hosts.get_host(conn, "web1")
    tok = agent.issue_token(conn, h["id"], None, client_ip=IP, purpose="install", ttl_seconds=600)
    r = backend.agent_report(tok, "installing", "partition: /dev/vda", IP)
    assert r["state"] == "installing" and "local_token" not in r
    assert hosts.get_host(conn, "web1")["boot_mode"] == "install"
    r = backend.agent_report(tok, "installed", "installed", IP)
    assert r["state"] == "installed" and len(r["local_token"]) > 30
    return r["local_token"]


def test_install_then_local_boot_reports_booted_mode_local(backend):
    conn = backend.store.conn()
    disk_token = _install(backend)
    h = hosts.get_host(conn, "web1")
    assert (h["state"], h["mode"]) == ("installed", "local")
    # only the hash is stored
    assert disk_token not in str([tuple(r) for r in conn.execute("SELECT * FROM disk_tokens")])
    r = backend.agent_report(disk_token, "booted", "web1 booted from its disk", IP)
    assert r == {"host": "web1", "state": "booted", "ip": IP, "boot_mode": "local"}
    h = hosts.get_host(conn, "web1")
    assert (h["state"], h["boot_mode"]) == ("booted", "local")
    # every local boot reports again with the same token
    assert backend.agent_report(disk_token, "booted", "", IP)["state"] == "booted"
    kinds = [r[0] for r in conn.execute("SELECT kind FROM events WHERE host_id = ? ORDER BY id",
                                        (h["id"],))]
    assert kinds.count("boot.local") == 2
    assert kinds.index("host.installing") < kinds.index("host.installed") < kinds.index("host.booted")


def test_disk_token_refused_from_another_address_and_for_install_events(backend):
    conn = backend.store.conn()
    disk_token = _install(backend)
    with pytest.raises(agent.AgentRejected) as e:
        backend.agent_report(disk_token, "booted", "", "10.77.0.99")
    assert e.value.status == 403
    with pytest.raises(agent.AgentRejected) as e:
        backend.agent_report(disk_token, "installing", "", IP)
    assert e.value.status == 400
    assert hosts.get_host(conn, "web1")["state"] == "installed"
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'agent.rejected'").fetchone()[0]


def test_a_new_install_replaces_the_disk_token(backend):
    conn = backend.store.conn()
    first = _install(backend)
    backend.agent_report(first, "booted", "", IP)
    hosts.update_host(conn, "web1", mode="install")  # the admin installs it again
    second = _install(backend)
    assert first != second
    assert localboot.verify_disk_token(conn, first) is None
    assert localboot.verify_disk_token(conn, second).host_name == "web1"
    with pytest.raises(agent.AgentRejected) as e:
        backend.agent_report(first, "booted", "", IP)
    assert e.value.status == 401


def test_failed_install_leaves_install_mode_for_a_retry(backend):
    conn = backend.store.conn()
    h = hosts.get_host(conn, "web1")
    tok = agent.issue_token(conn, h["id"], None, client_ip=IP, purpose="install", ttl_seconds=600)
    backend.agent_report(tok, "installing", "partition", IP)
    r = backend.agent_report(tok, "failed", "install failed: disk /dev/vda is too small", IP)
    assert "local_token" not in r
    h = hosts.get_host(conn, "web1")
    assert (h["state"], h["mode"]) == ("failed", "install")
    assert conn.execute("SELECT count(*) FROM disk_tokens").fetchone()[0] == 0


def test_removing_the_host_removes_its_disk_token(backend):
    conn = backend.store.conn()
    _install(backend)
    hosts.remove_host(conn, "web1")
    assert conn.execute("SELECT count(*) FROM disk_tokens").fetchone()[0] == 0
    assert db.schema_version(conn) >= 26


def test_without_a_known_address_the_disk_token_is_bound_to_the_installers(tmp_path):
    """Proxy DHCP (stateless mode): another server leases, so the router knows no
    address of the host; the disk token is accepted only from the address the
    installer reported `installed` from."""
    store = Store(tmp_path / "nixie.db")
    conn = store.conn()
    backend = SqliteBackend(store)
    hosts.add_host(conn, "web1", [MAC], "f", mode="install")
    h = hosts.get_host(conn, "web1")
    tok = agent.issue_token(conn, h["id"], None, client_ip=IP, purpose="install", ttl_seconds=600)
    backend.agent_report(tok, "installing", "partition", IP)
    disk_token = backend.agent_report(tok, "installed", "installed", IP)["local_token"]
    with pytest.raises(agent.AgentRejected) as e:
        backend.agent_report(disk_token, "booted", "", "10.77.0.151")
    assert e.value.status == 403
    assert backend.agent_report(disk_token, "booted", "", IP)["boot_mode"] == "local"
    assert hosts.get_host(conn, "web1")["state"] == "booted"
