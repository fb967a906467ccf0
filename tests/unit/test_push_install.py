"""The push install (item 2 of issue 17): nixos-anywhere from the router, trusting only
the SSH host key the host's agent reported with its per-boot token.

nixos-anywhere, disko and nixos-install exist only on NixOS, so this is a boundary
test: the exact command line is compared whole with a golden file, and the CLI
(`nixie host install NAME --push --dry-run`), the API (`POST
/api/v1/hosts/NAME/install`) and the host page's button are checked to build that same
command from the same domain state. What runs for real here: the key pinning through
`SqliteBackend.agent_report` (the sink HTTP boot calls), and, in
tests/netns/test_agent_real_router.py, the real agent sending its key and the real ssh
connecting with these options to a real sshd only when its key is the pinned one."""

from __future__ import annotations

import json
import threading

import pytest

from appliance.domain import agent, hostkeys, hosts
from appliance.domain.boot_backend import SqliteBackend
from appliance.errors import Conflict, InvalidInput
from appliance.nix import install
from tests.conftest import run_nixie, wait_for, write_config
from tests.golden import assert_golden
from tests.webapp import csrf_of, logged_in_client, make_app

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8AWXzPjMr0AxPMISyi3san7mU05Xctk8zQfDz4Bhyy"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDVhzVwYzTTIG4rwwQV9i8Kj1ij6lOzbZlQ1Ckx5UHNu"
MAC, IP = "bc:24:11:00:00:01", "10.77.0.150"
TOPLEVEL = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1"

pytestmark = pytest.mark.unit


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state")
    client = logged_in_client(app)
    conn = store.conn()
    hosts.add_host(conn, "web1", [MAC], "github:me/infra")
    yield app, store, cfg, client, {"X-CSRFToken": csrf_of(client.get("/").data)}
    store.close()


def _boot(store, key: str | None = KEY) -> str:
    """One netboot of web1 that reports `booted` with its host key; returns its token."""
    conn = store.conn()
    h = hosts.get_host(conn, "web1")
    tok = agent.issue_token(conn, h["id"], None, client_ip=IP, purpose="netboot")
    SqliteBackend(store).agent_report(tok, "booted", "", IP, **({"ssh_host_key": key + " root@web1"}
                                                               if key else {}))
    return tok


def _generation(store) -> None:
    conn = store.conn()
    h = hosts.get_host(conn, "web1")
    conn.execute("INSERT INTO generations (host_id, number, toplevel, created_at) "
                 "VALUES (?,?,?,0)", (h["id"], 1, TOPLEVEL))


def test_validate_takes_openssh_public_keys_only():
    assert hostkeys.validate(KEY + " root@web1\n") == KEY
    for bad in ("", "ssh-ed25519", "ssh-dss AAAA", "ssh-ed25519 !!!",
                # a valid blob of another type under this type's name
                "ecdsa-sha2-nistp256 " + KEY.split()[1], "ssh-ed25519 " + "A" * 5000):
        with pytest.raises(InvalidInput):
            hostkeys.validate(bad)


def test_the_first_report_of_a_boot_pins_its_key_and_later_ones_cannot_change_it(web):
    _, store, _, _, _ = web
    conn = store.conn()
    h = hosts.get_host(conn, "web1")
    tok = _boot(store)
    assert hosts.get_host(conn, "web1")["ssh_host_key"] == KEY
    # the same boot reporting another key (say, something else on its address with the
    # token): a warning, and the pin stays
    assert hostkeys.pin(conn, h["id"], OTHER, IP, tok) == "mismatch"
    assert hosts.get_host(conn, "web1")["ssh_host_key"] == KEY
    # a new boot (a new token from its boot script) pins the key it comes up with
    _boot(store, OTHER)
    assert hosts.get_host(conn, "web1")["ssh_host_key"] == OTHER
    kinds = [r[0] for r in conn.execute("SELECT kind FROM events WHERE host_id = ? ORDER BY id",
                                        (h["id"],))]
    assert kinds.count("host.ssh_key_pinned") == 2 and "host.ssh_key_mismatch" in kinds


def test_a_rejected_report_pins_nothing_and_a_bad_key_is_an_event(web):
    _, store, _, _, _ = web
    conn = store.conn()
    h = hosts.get_host(conn, "web1")
    tok = agent.issue_token(conn, h["id"], None, client_ip=IP, purpose="netboot")
    with pytest.raises(agent.AgentRejected):  # from another address
        SqliteBackend(store).agent_report(tok, "booted", "", "10.77.0.99", ssh_host_key=KEY)
    assert hosts.get_host(conn, "web1")["ssh_host_key"] is None
    SqliteBackend(store).agent_report(tok, "booted", "", IP, ssh_host_key="ssh-ed25519 nope")
    assert hosts.get_host(conn, "web1")["state"] == "booted"  # the report itself counts
    assert hosts.get_host(conn, "web1")["ssh_host_key"] is None
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'agent.bad_ssh_key'").fetchone()[0]


def test_push_command_is_the_golden_one_and_trusts_only_the_pinned_key(web, tmp_path):
    _, store, cfg, _, _ = web
    conn = store.conn()
    with pytest.raises(Conflict, match="no pinned SSH host key"):
        install.push_command(conn, cfg.state_dir, "web1")
    _boot(store)
    with pytest.raises(Conflict, match="no built generation"):
        install.push_command(conn, cfg.state_dir, "web1")
    _generation(store)
    argv, known = install.push_command(conn, cfg.state_dir, "web1")
    assert known == f"{IP} {KEY}\n"
    text = "\n".join(a.replace(cfg.state_dir, "$STATE") for a in argv) + "\n"
    assert_golden("push-install-flake.argv", text)
    assert "StrictHostKeyChecking=no" not in argv and "StrictHostKeyChecking=yes" in argv
    # with a disko script linked into the toplevel (netboot-client does that) and the
    # router's SSH identity, the closure is handed over prebuilt
    system = tmp_path / "store" / "system"
    disko = tmp_path / "store" / "disko-script"
    disko.parent.mkdir(parents=True)
    disko.write_text("#!/bin/sh\n")
    system.mkdir()
    (system / "nixie-disko").symlink_to(disko)
    conn.execute("UPDATE generations SET toplevel = ?", (str(system),))
    ident = install.ssh_key_file(cfg.state_dir)
    ident.parent.mkdir(parents=True, exist_ok=True)
    ident.write_text("private\n")
    argv, _ = install.push_command(conn, cfg.state_dir, "web1")
    text = "\n".join(a.replace(cfg.state_dir, "$STATE").replace(str(tmp_path), "$TMP")
                     for a in argv) + "\n"
    assert_golden("push-install-store-paths.argv", text)


def test_cli_api_and_page_build_the_same_command(web, tmp_path, monkeypatch):
    app, store, cfg, client, csrf = web
    _boot(store)
    _generation(store)
    argv, known = install.push_command(store.conn(), cfg.state_dir, "web1")
    write_config(tmp_path / "config.json", cfg.state_dir)
    r = run_nixie("host", "install", "web1", "--push", "--dry-run", "--json",
                  config=tmp_path / "config.json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"host": "web1", "argv": argv, "known_hosts": known}
    r = run_nixie("host", "install", "web1", "--dry-run", config=tmp_path / "config.json")
    assert r.returncode == 2 and "--push" in r.stderr
    r = client.post("/api/v1/hosts/web1/install", json={"push": True, "dry_run": True},
                    headers=csrf)
    assert r.status_code == 200 and r.json["argv"] == argv and r.json["started"] is False
    # nixos-anywhere is not on this machine: a clear 400, nothing started
    monkeypatch.setenv("PATH", "/nonexistent")
    r = client.post("/api/v1/hosts/web1/install", json={"push": True}, headers=csrf)
    assert r.status_code == 400 and "nixos-anywhere is not installed" in r.json["error"]
    r = client.post("/api/v1/hosts/web1/install", json={"push": False}, headers=csrf)
    assert r.status_code == 400 and r.json["field"] == "push"
    r = client.post("/api/v1/hosts/web1/install", json={"push": True})  # no CSRF header
    assert r.status_code in (400, 403)
    r = client.post("/api/v1/hosts/nobody/install", json={"push": True}, headers=csrf)
    assert r.status_code == 404
    # the host page shows the pinned key and the button; its POST answers with the reason
    page = client.get("/hosts/web1").data.decode()
    assert KEY in page and "Push install (SSH)" in page
    r = client.post("/hosts/web1/push-install", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 302
    assert "nixos-anywhere is not installed" in client.get("/hosts/web1").data.decode()
    assert not [k for (k,) in store.conn().execute("SELECT kind FROM events")
                if k.startswith("install.push")]


STAND_IN = """#!/bin/sh
# stands in for nixos-anywhere (NixOS only): waits until the test lets it finish
while [ ! -e "$RELEASE" ]; do sleep 0.05; done
echo "stand-in done: $*"
"""


def _stand_in(tmp_path, monkeypatch):
    """nixos-anywhere on PATH as STAND_IN; returns the file that lets it finish."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "nixos-anywhere").write_text(STAND_IN)
    (bindir / "nixos-anywhere").chmod(0o755)
    release = tmp_path / "release"
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("RELEASE", str(release))
    return release


def _wait_pushed(conn, n: int) -> None:
    """Until `n` pushes have finished (install.pushed events), at most 30 s."""
    wait_for(lambda: conn.execute(
        "SELECT count(*) FROM events WHERE kind = 'install.pushed'").fetchone()[0] >= n,
        timeout=30)


def test_a_flood_of_push_requests_starts_one_install(web, tmp_path, monkeypatch):
    """Abuse: the endpoint is hammered while a push runs. One nixos-anywhere runs (a
    stand-in on PATH, since the real one exists only on NixOS); every other request is
    409; once it finished, a new request starts again. The lock is a file lock, so the
    web workers' processes share it."""
    _, store, cfg, client, csrf = web
    _boot(store)
    _generation(store)
    release = _stand_in(tmp_path, monkeypatch)
    codes = [client.post("/api/v1/hosts/web1/install", json={"push": True},
                         headers=csrf).status_code for _ in range(40)]
    assert codes.count(202) == 1 and codes.count(409) == 39, codes
    # the CLI (another process) meets the same lock
    write_config(tmp_path / "config.json", cfg.state_dir)
    r = run_nixie("host", "install", "web1", "--push", config=tmp_path / "config.json")
    assert r.returncode != 0 and "a push install of web1 is already running" in r.stderr, r
    release.touch()
    conn = store.conn()
    _wait_pushed(conn, 1)
    kinds = [k for (k,) in conn.execute("SELECT kind FROM events WHERE kind LIKE 'install.push%'")]
    assert kinds == ["install.push", "install.pushed"], kinds
    # finished: its thread ended, and released the lock with it (before the event)
    assert wait_for(lambda: "push-install-web1" not in {t.name for t in threading.enumerate()},
                    timeout=30)
    r = client.post("/api/v1/hosts/web1/install", json={"push": True}, headers=csrf)
    assert r.status_code == 202
    _wait_pushed(conn, 2)
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'install.pushed'").fetchone()[0] == 2


def test_huge_and_forged_install_bodies_start_nothing(web, tmp_path, monkeypatch):
    """Abuse: bodies that must not start nixos-anywhere (a stand-in is on PATH, so a start
    would show as an install.push event): over the app's body limit (413), not a JSON
    object, push or dry_run of the wrong type (400)."""
    _, store, _cfg, client, csrf = web
    _boot(store)
    _generation(store)
    release = _stand_in(tmp_path, monkeypatch)
    url = "/api/v1/hosts/web1/install"
    refused = [
        (client.post(url, data=b'{"push": true, "x": "' + b"x" * (9 << 20) + b'"}',
                     headers=csrf, content_type="application/json"), 413, None),
        (client.post(url, data=b"[true", headers=csrf, content_type="application/json"),
         400, None),
        (client.post(url, json=[{"push": True}], headers=csrf), 400, None),
        (client.post(url, json={"push": "true"}, headers=csrf), 400, "push"),
        (client.post(url, json={"push": 1}, headers=csrf), 400, "push"),
        (client.post(url, json={"push": True, "dry_run": "no"}, headers=csrf), 400, "dry_run"),
    ]
    for r, status, field in refused:
        assert (r.status_code, r.json.get("field")) == (status, field), r.data[:200]
    conn = store.conn()
    assert not [k for (k,) in conn.execute("SELECT kind FROM events")
                if k.startswith("install.push")]
    # none of them holds the one-push lock: a good request starts the push now
    assert client.post(url, json={"push": True}, headers=csrf).status_code == 202
    release.touch()
    _wait_pushed(conn, 1)
    kinds = [k for (k,) in conn.execute("SELECT kind FROM events WHERE kind LIKE 'install.push%'")]
    assert kinds == ["install.push", "install.pushed"], kinds


def test_a_push_started_the_moment_install_pushed_is_recorded_is_accepted(web, tmp_path,
                                                                        monkeypatch):
    """A watcher that pushes again as soon as it sees `install.pushed` gets 202, not 409:
    the lock is released before the event is recorded. The watcher reacts inside the
    recording itself (the real record runs first), so there is no window to get lucky."""
    _, store, _cfg, client, csrf = web
    _boot(store)
    _generation(store)
    release = _stand_in(tmp_path, monkeypatch)
    release.touch()  # every push finishes at once
    real_record, again = install.events.record, []

    def watcher(conn, kind, *a, **kw):
        row = real_record(conn, kind, *a, **kw)
        if kind == "install.pushed" and not again:
            again.append(client.post("/api/v1/hosts/web1/install", json={"push": True},
                                     headers=csrf))
        return row

    monkeypatch.setattr(install.events, "record", watcher)
    assert client.post("/api/v1/hosts/web1/install", json={"push": True},
                       headers=csrf).status_code == 202
    conn = store.conn()
    _wait_pushed(conn, 2)
    assert again[0].status_code == 202, again[0].json
