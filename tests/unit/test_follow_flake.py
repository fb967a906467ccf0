"""Issue 18, in-process: builds follow the flake (declared hosts bound, only changed systems
queued), the forge webhook (its signatures, and what a wrong one, a flood of replays or a
huge body gets), private-flake credentials (0600, never shown, in nix's environment and
never its arguments: the real `nix` reads them back), machines waiting (seen by DHCP's
commit and HTTP boot, capped under a MAC flood, adopted through API, page and CLI) and the
binary cache's key."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import stat

import pytest
from werkzeug.datastructures import Headers

from appliance.domain import autobuild, builds, flakes, hosts, machines
from appliance.domain.boot_backend import SqliteBackend
from appliance.domain.lease_store import SqliteLeaseStore
from appliance.nix import flake_access, flake_eval
from appliance.nix.command import Nix
from lab import flake as labflake
from netservices.dhcp.store import EventRecord
from tests.conftest import run_nixie
from tests.nixlab import NIX_EXTRA
from tests.webapp import csrf_of, logged_in_client, make_app, post_form

URL = "git+https://forge.nixie.invalid/fleet"
MAC_A, MAC_B, MAC_W = "52:54:00:18:00:01", "52:54:00:18:00:02", "52:54:00:18:00:99"
TOPS = {"web": {"drv": "/nix/store/aaaa-nixos-system-web.drv", "out": "/nix/store/aaaa-web"},
        "db": {"drv": "/nix/store/bbbb-nixos-system-db.drv", "out": "/nix/store/bbbb-db"}}


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state")
    client = logged_in_client(app)
    yield app, store, cfg, client, {"X-CSRFToken": csrf_of(client.get("/").data)}
    store.close()


def evaluated(conn, url=URL, tops=TOPS, macs=None, policy="on_change") -> dict:
    """A flake as the evaluator leaves it: configurations, declared MACs, toplevels."""
    f = flakes.add_flake(conn, url, policy)
    flakes.save_refresh(conn, f["id"], configurations=list(tops), locked_url=url + "?rev=1",
                        error=None)
    flakes.save_toplevels(conn, f["id"], tops)
    conn.execute("UPDATE flakes SET macs = ?, eval_state = 'idle' WHERE id = ?",
                 (json.dumps(macs or {}), f["id"]))
    return flakes.get_flake(conn, str(f["id"]))


def queued_hosts(conn) -> list[str]:
    return sorted(r[0] for r in conn.execute("SELECT host_name FROM builds WHERE status = 'queued'"))


# ------------------------------------------------------------------ builds follow the flake

def test_declared_hosts_are_bound_and_only_changed_systems_are_built(web):
    _, store, _, _, _ = web
    conn = store.conn()
    hosts.add_host(conn, "mine", ["52:54:00:18:00:50"], URL, "nixosConfigurations.db")
    f = evaluated(conn, macs={"web": [MAC_A], "db": [MAC_B]})
    r = autobuild.reconcile(conn)
    # web is declared and free: bound from the flake; db's MAC is free too: its own host
    assert sorted(r.bound) == ["db", "web"]
    assert hosts.get_host(conn, "web")["source"] == "flake"
    assert hosts.get_host(conn, "mine")["source"] == "manual"
    assert queued_hosts(conn) == ["db", "mine", "web"]
    # nothing changed: nothing more, however often it runs
    for _ in range(3):
        assert autobuild.reconcile(conn).queued == []
    conn.execute("UPDATE builds SET status = 'succeeded'")
    # only db's system changed: only db's hosts are queued; web keeps what it has
    flakes.save_toplevels(conn, f["id"], {**TOPS, "db": {"drv": "/nix/store/cccc-db.drv",
                                                         "out": "/nix/store/cccc-db"}})
    assert autobuild.reconcile(conn).queued and queued_hosts(conn) == ["db", "mine"]
    # a host added by hand to the evaluated flake is built at once
    hosts.add_host(conn, "late", ["52:54:00:18:00:51"], URL, "nixosConfigurations.web")
    autobuild.reconcile(conn)
    assert queued_hosts(conn) == ["db", "late", "mine"]
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'build.auto'").fetchone()[0] == 6


def test_a_host_whose_generation_already_is_the_system_is_not_rebuilt(web):
    _, store, _, _, _ = web
    conn = store.conn()
    h = hosts.add_host(conn, "web", [MAC_A], URL, "nixosConfigurations.web")
    conn.execute("INSERT INTO generations (host_id, number, toplevel, created_at) "
                 "VALUES (?, 1, ?, 0)", (h["id"], TOPS["web"]["out"]))
    conn.execute("UPDATE hosts SET current_generation = 1 WHERE id = ?", (h["id"],))
    evaluated(conn)
    r = autobuild.reconcile(conn)
    assert r.adopted == ["web"] and r.queued == [] and queued_hosts(conn) == []


def test_a_manual_flake_binds_and_builds_nothing_by_itself(web):
    _, store, _, client, csrf = web
    conn = store.conn()
    f = evaluated(conn, macs={"web": [MAC_A]}, policy="manual")
    hosts.add_host(conn, "db", [MAC_B], URL, "nixosConfigurations.db")
    r = autobuild.reconcile(conn)
    assert (r.bound, r.queued) == ([], []) and [h["name"] for h in hosts.list_hosts(conn)] == ["db"]
    # switched to on_change (API): evaluated again, then followed
    r = client.patch(f"/api/v1/flakes/{f['id']}", json={"build_policy": "on_change"}, headers=csrf)
    assert r.status_code == 200 and r.json["build_policy"] == "on_change"
    assert r.json["eval_state"] == "queued"
    r = client.patch(f"/api/v1/flakes/{f['id']}", json={"build_policy": "always"}, headers=csrf)
    assert r.status_code == 400 and r.json["field"] == "build_policy"


def test_api_add_takes_the_configured_default_policy(web):
    _, _, cfg, client, csrf = web
    assert cfg.builder.flake_policy == "on_change"
    r = client.post("/api/v1/flakes", json={"url": URL}, headers=csrf)
    assert r.status_code == 202 and r.json["build_policy"] == "on_change"
    r = client.post("/api/v1/flakes", json={"url": URL + "2", "build_policy": "manual"},
                    headers=csrf)
    assert r.json["build_policy"] == "manual"


# ------------------------------------------------------------------ webhooks

def github(secret: bytes, body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
            "X-GitHub-Event": "push", "Content-Type": "application/json"}


def test_verify_hook_accepts_each_forge_shape_and_nothing_else():
    secret, body = b"s3cret-value", b'{"ref": "refs/heads/main"}'
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    ok = [{"X-Hub-Signature-256": f"sha256={sig}"}, {"X-Gitea-Signature": sig},
          {"X-Forgejo-Signature": sig.upper()}, {"X-Gogs-Signature": sig},
          {"X-Gitlab-Token": "s3cret-value"}]
    for h in ok:
        assert flake_access.verify_hook(secret, Headers(h), body), h
    bad = [{}, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, {"X-Gitea-Signature": sig[:-1]},
           {"X-Gitlab-Token": "s3cret-valuf"}, {"X-Hub-Signature": "sha1=" + sig},
           {"X-Hub-Signature-256": f"sha256={sig}", "Ignored": "x"} | {"X-Gitlab-Token": ""}]
    for h in bad[:-1]:
        assert not flake_access.verify_hook(secret, Headers(h), body), h
    # a valid signature of another body is refused
    assert not flake_access.verify_hook(secret, Headers(ok[0]), body + b" ")


def test_webhook_endpoint_refuses_wrong_signatures_floods_and_huge_bodies(web):
    app, store, cfg, client, csrf = web
    conn = store.conn()
    f = evaluated(conn)
    r = client.post(f"/api/v1/flakes/{f['id']}/hook-secret", headers=csrf)
    assert r.status_code == 201 and r.json["url"].endswith(f"/api/v1/flakes/{f['id']}/hook")
    secret = r.json["secret"].encode()
    path = flake_access.flake_dir(cfg.state_dir, f["id"]) / flake_access.HOOK_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert r.json["secret"] not in json.dumps(client.get(f"/api/v1/flakes/{f['id']}").json)
    anon = app.test_client()  # no session, no token, no CSRF: a forge
    body = b'{"ref": "refs/heads/main", "after": "abc"}'
    hook = f"/api/v1/flakes/{f['id']}/hook"
    # wrong signature, none, a flake without a webhook and an unknown flake: the same 401
    for url, headers in ((hook, github(b"wrong", body)), (hook, {}),
                         ("/api/v1/flakes/999/hook", github(secret, body))):
        r = anon.post(url, data=body, headers=headers)
        assert r.status_code == 401, (url, r.status_code)
    assert flakes.get_flake(conn, str(f["id"]))["eval_state"] == "idle"
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'flake.hook_rejected'"
                        ).fetchone()[0] == 3
    # a body over 1 MiB: 413, before any signature is computed
    huge = b"x" * (flake_access.MAX_HOOK_BODY + 1)
    assert anon.post(hook, data=huge, headers=github(secret, huge)).status_code == 413
    # the right signature queues an evaluation (GitLab's token too), once the last one
    # is HOOK_MIN_INTERVAL old
    conn.execute("UPDATE flakes SET last_refresh = 1 WHERE id = ?", (f["id"],))
    r = anon.post(hook, data=body, headers=github(secret, body))
    assert r.status_code == 202 and r.json == {"result": "queued"}
    assert flakes.get_flake(conn, str(f["id"]))["eval_state"] == "queued"
    # a flood of replays while it is queued or just evaluated: at most one more evaluation
    for _ in range(200):
        assert anon.post(hook, data=body, headers={"X-Gitlab-Token": secret.decode()}
                         ).status_code == 202
    conn.execute("UPDATE flakes SET eval_state = 'evaluating' WHERE id = ?", (f["id"],))
    for _ in range(50):
        assert anon.post(hook, data=body, headers=github(secret, body)).json["result"] == "pending"
    conn.execute("UPDATE flakes SET eval_state = 'idle', last_refresh = ? WHERE id = ?",
                 (flakes.now(), f["id"]))
    assert anon.post(hook, data=body, headers=github(secret, body)).json["result"] == "pending"
    assert flakes.queue_pending_hooks(conn) == 0  # the interval has not passed
    assert flakes.queue_pending_hooks(conn, flakes.now() + flakes.HOOK_MIN_INTERVAL) == 1
    assert flakes.queue_pending_hooks(conn, flakes.now() + flakes.HOOK_MIN_INTERVAL) == 0
    # turned off: the old secret stops working
    assert client.delete(f"/api/v1/flakes/{f['id']}/hook-secret", headers=csrf).status_code == 204
    assert anon.post(hook, data=body, headers=github(secret, body)).status_code == 401


# ------------------------------------------------------------------ credentials

def test_credentials_are_files_0600_never_shown_and_reach_nix_by_environment(web, tmp_path):
    _, store, cfg, client, csrf = web
    conn = store.conn()
    f = evaluated(conn, url="github:me/private-fleet")
    token = "ghp_" + "T0k3n" * 8
    r = client.put(f"/api/v1/flakes/{f['id']}/credential", json={"kind": "token", "secret": token},
                   headers=csrf)
    assert r.status_code == 200 and r.json["credential"] == "token"
    assert token not in r.get_data(as_text=True)
    assert token not in client.get("/api/v1/flakes").get_data(as_text=True)
    assert token not in client.get("/flakes/").get_data(as_text=True)
    path = flake_access.flake_dir(cfg.state_dir, f["id"]) / flake_access.TOKEN_FILE
    assert path.read_text() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    dumped = "\n".join(str(tuple(row)) for t in ("events", "flakes")
                       for row in conn.execute(f"SELECT * FROM {t}"))
    assert token not in dumped
    nix = flake_access.nix_for(Nix(), cfg.state_dir, flakes.get_flake(conn, str(f["id"])))
    assert f"access-tokens = github.com={token}" in nix.env()["NIX_CONFIG"]
    assert token not in " ".join(nix.option_args() + nix.store_args())
    assert token not in repr(nix)
    assert flake_access.redact(f"fetching with {token} failed", cfg.state_dir,
                               flakes.get_flake(conn, str(f["id"]))) == "fetching with [secret] failed"
    if shutil.which("nix"):  # the real nix parses it as its access-tokens setting
        shown = json.loads(nix.run(["nix", "show-config", "--json"]))
        assert shown["access-tokens"]["value"] == {"github.com": token}
    # an SSH deploy key replaces it; git gets it through GIT_SSH_COMMAND (its path only)
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA" + "A" * 40 + \
        "\n-----END OPENSSH PRIVATE KEY-----\n"
    r = client.put(f"/api/v1/flakes/{f['id']}/credential", json={"kind": "ssh_key", "secret": key},
                   headers=csrf)
    assert r.status_code == 200 and r.json["credential"] == "ssh_key" and not path.exists()
    env = flake_access.nix_for(Nix(), cfg.state_dir, flakes.get_flake(conn, str(f["id"]))).env()
    keyfile = flake_access.flake_dir(cfg.state_dir, f["id"]) / flake_access.KEY_FILE
    assert f"-i {keyfile}" in env["GIT_SSH_COMMAND"] and "BEGIN" not in env["GIT_SSH_COMMAND"]
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    r = client.put(f"/api/v1/flakes/{f['id']}/credential", json={"kind": "ssh_key",
                                                                 "secret": "not a key"}, headers=csrf)
    assert r.status_code == 400 and r.json["field"] == "secret" and keyfile.exists()
    # removing the flake removes its secrets
    assert client.delete(f"/api/v1/flakes/{f['id']}", headers=csrf).status_code == 204
    assert not flake_access.flake_dir(cfg.state_dir, f["id"]).exists()


def test_token_hosts():
    assert flake_access.token_host("github:me/x") == "github.com"
    assert flake_access.token_host("github:me/x?host=ghe.corp") == "ghe.corp"
    assert flake_access.token_host("gitlab:g/p") == "gitlab.com"
    assert flake_access.token_host("git+https://git.corp:8443/x.git") == "git.corp"
    assert flake_access.token_host("https://h.example/x.tar.gz") == "h.example"
    assert flake_access.token_host("path:/srv/fleet") is None


# ------------------------------------------------------------------ machines waiting

def dhcp_boot(mac: str, ts: float, arch: int = 7, host_id=None) -> EventRecord:
    return EventRecord("boot.dhcp", f"boot answer to {mac}", ts, host_id=host_id, mac=mac,
                       data={"arch": arch, "boot_file": "snponly.efi", "kind": "tftp",
                             "vendor_class": "PXEClient:Arch:00007:UNDI:003016"})


def test_dhcp_and_http_boot_report_unknown_machines_and_a_flood_is_capped(web):
    _, store, cfg, _, _ = web
    conn = store.conn()
    hosts.add_host(conn, "known", [MAC_A], URL)
    leases = SqliteLeaseStore(cfg.db_path)
    try:
        leases.commit([], [dhcp_boot(MAC_W, 100.0), dhcp_boot(MAC_W, 160.0)])
        SqliteBackend(store).event("boot.script", "unknown machine", mac=MAC_B, ip="10.0.0.9",
                                   data={"script": "unknown"})
        SqliteBackend(store).event("boot.script", "known", mac=MAC_A, host_id=1,
                                   data={"script": "menu"})
        w = {m["mac"]: m for m in machines.list_waiting(conn)}
        assert set(w) == {MAC_W, MAC_B}
        assert (w[MAC_W]["first_seen"], w[MAC_W]["last_seen"], w[MAC_W]["firmware"],
                w[MAC_W]["seen"]) == (100.0, 160.0, "uefi", 2)
        assert w[MAC_W]["vendor_class"].startswith("PXEClient:Arch:00007")
        assert w[MAC_B]["ip"] == "10.0.0.9"
        # a MAC flood: the table keeps the most recently seen MAX_WAITING
        t0 = flakes.now()
        flood = [dhcp_boot(f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                           t0 + 1 + i) for i in range(machines.MAX_WAITING + 300)]
        for k in range(0, len(flood), 100):
            leases.commit([], flood[k:k + 100])
    finally:
        leases.close()
    assert conn.execute("SELECT count(*) FROM waiting_machines").fetchone()[0] == \
        machines.MAX_WAITING
    newest = machines.list_waiting(conn, limit=1)[0]
    assert newest["mac"] == flood[-1].mac
    for gone in (MAC_W, MAC_B):
        assert not conn.execute("SELECT 1 FROM waiting_machines WHERE mac = ?", (gone,)).fetchone()


def test_adopt_through_the_api_the_page_and_the_cli(web, tmp_path):
    app, store, cfg, client, csrf = web
    conn = store.conn()
    evaluated(conn)
    for mac in (MAC_W, MAC_B, "52:54:00:18:00:98"):
        machines.record(conn, [machines.Sighting(mac, 5.0, 0, "PXEClient", None)])
    # the dashboard and the page list them
    assert MAC_W in client.get("/").get_data(as_text=True)
    page = client.get("/machines/").get_data(as_text=True)
    assert MAC_W in page and "Add as host" in page and "bios" in page
    assert "host-5400189" not in page and 'value="host-180099"' in page  # name prefilled
    # API: adopt on a configuration; the host and its build
    r = client.post(f"/api/v1/machines/{MAC_W}/adopt", json={"configuration": "web"},
                    headers=csrf)
    assert r.status_code == 201, r.json
    assert r.json["host"]["name"] == "web" and r.json["host"]["source"] == "adopted"
    assert r.json["build"]["status"] == "queued"
    assert MAC_W not in [m["mac"] for m in client.get("/api/v1/machines").json]
    r = client.post(f"/api/v1/machines/{MAC_W}/adopt", json={"configuration": "web"}, headers=csrf)
    assert r.status_code == 409 and "already belongs to host web" in r.json["error"]
    r = client.post(f"/api/v1/machines/{MAC_B}/adopt", json={"configuration": "nope"},
                    headers=csrf)
    assert r.status_code == 400 and r.json["field"] == "configuration"
    # the page: pick db; the host page says so; its build is queued (once: reconcile agrees)
    f = flakes.get_flake(conn, URL)
    prefix = MAC_B.replace(":", "")
    r = post_form(client, f"/machines/{MAC_B}/adopt",
                  {f"{prefix}-configuration": f"{f['id']}:db", f"{prefix}-name": "db-1",
                   f"{prefix}-csrf_token": csrf_of(client.get("/machines/").data)},
                  page="/machines/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/hosts/db-1"), r.data[:400]
    shown = client.get("/hosts/db-1").get_data(as_text=True)
    assert "adopted from Machines waiting" in shown and "build" in shown
    assert autobuild.reconcile(conn).queued == []
    assert queued_hosts(conn) == ["db-1", "web"]
    # the CLI
    r = run_nixie("host", "waiting", "--json", config=cfg_file(tmp_path, cfg))
    assert [m["mac"] for m in json.loads(r.stdout)] == ["52:54:00:18:00:98"]
    r = run_nixie("host", "adopt", "52:54:00:18:00:98", "--configuration", "db", "--name",
                  "db-2", "--json", config=cfg_file(tmp_path, cfg))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["host"]["source"] == "adopted"
    assert queued_hosts(conn) == ["db-1", "db-2", "web"]
    flakes_page = client.get("/flakes/").get_data(as_text=True)
    assert "adopted" in flakes_page and "db-2" in flakes_page
    builds.list_builds(conn)


def cfg_file(tmp_path, cfg):
    p = tmp_path / "cli-config.json"
    if not p.exists():
        p.write_text(json.dumps(cfg.to_dict()))
    return p


# ------------------------------------------------------------------ the cache key

def test_cache_key_in_api_dashboard_and_cli(web, tmp_path):
    _, _, cfg, client, _ = web
    assert client.get("/api/v1/cache").json["public_key"] is None
    assert run_nixie("cache", "key", config=cfg_file(tmp_path, cfg)).returncode == 1
    d = tmp_path / "state" / "binary-cache"
    d.mkdir(parents=True, exist_ok=True)
    key = "router-nixie-1:" + "A" * 43 + "="
    (d / "public").write_text(key + "\n")
    os.chmod(d / "public", 0o644)
    url = cfg.boot_base_url + "/nix-cache"
    snippet = (f'nix.settings.substituters = [ "{url}" ];\n'
               f'nix.settings.trusted-public-keys = [ "{key}" ];\n')
    assert client.get("/api/v1/cache").json == {"url": url, "public_key": key, "snippet": snippet}
    assert snippet.replace('"', "&#34;") in client.get("/").get_data(as_text=True)
    r = run_nixie("cache", "key", "--json", config=cfg_file(tmp_path, cfg))
    assert r.returncode == 0 and json.loads(r.stdout)["snippet"] == snippet


# ------------------------------------------------------------------ the real nix on a git flake

@pytest.mark.skipif(shutil.which("nix") is None, reason="nix is not installed")
def test_real_evaluation_records_systems_and_the_revision_check_sees_a_commit(web, tmp_path):
    _, store, cfg, _, _ = web
    conn = store.conn()
    repo = labflake.materialise(tmp_path / "flake", release="follow unit")
    url = f"git+file://{repo}"
    f = flakes.add_flake(conn, url)
    nix = Nix(extra_config=NIX_EXTRA)
    f = flake_eval.evaluate_next(conn, nix, str(cfg.state_dir))
    assert f["last_error"] is None and sorted(f["toplevels"]) == ["demo", "demo2"]
    assert all(t["drv"].endswith(".drv") and t["out"].startswith("/nix/store/")
               for t in f["toplevels"].values())
    # the revision has not moved: nothing queued
    assert not flake_eval.check_revision(conn, nix, f, str(cfg.state_dir))
    assert flakes.get_flake(conn, url)["eval_state"] == "idle"
    # a commit moves it: queued, and evaluating it changes exactly demo2's system
    before = f["toplevels"]
    p = repo / "flake.nix"
    p.write_text(p.read_text().replace('hostName = "demo2";',
                                       'hostName = "demo2"; kernelParams = [ "quiet" ];'))
    labflake.commit(repo, "demo2 only")
    assert flake_eval.check_revision(conn, nix, flakes.get_flake(conn, url), str(cfg.state_dir))
    after = flake_eval.evaluate_next(conn, nix, str(cfg.state_dir))["toplevels"]
    assert after["demo"] == before["demo"] and after["demo2"] != before["demo2"]


def test_flakes_page_sets_policy_and_credential_and_shows_a_webhook_secret_once(web):
    _, store, cfg, client, _ = web
    conn = store.conn()
    f = evaluated(conn, url="github:me/fleet", macs={"web": [MAC_A]})
    autobuild.reconcile(conn)
    page = client.get("/flakes/").get_data(as_text=True)
    assert "from the flake" in page and "Make a webhook secret" in page
    r = post_form(client, f"/flakes/{f['id']}/hook", {}, page="/flakes/")
    assert r.status_code == 200
    shown = r.get_data(as_text=True)
    secret = flake_access.hook_secret(cfg.state_dir, f["id"]).decode()
    assert f'id="hook-secret">{secret}</pre>' in shown and 'data-copy="hook-secret"' in shown
    assert secret not in client.get("/flakes/").get_data(as_text=True)  # never again
    r = post_form(client, f"/flakes/{f['id']}/policy", {"build_policy": "manual"}, page="/flakes/")
    assert r.status_code == 302 and flakes.get_flake(conn, str(f["id"]))["build_policy"] == "manual"
    r = post_form(client, f"/flakes/{f['id']}/credential",
                  {"kind": "token", "secret": "glpat-abcdefghijklmnop"}, page="/flakes/")
    assert r.status_code == 302
    page = client.get("/flakes/").get_data(as_text=True)
    assert "Access: access token" in page and "glpat-abcdefghijklmnop" not in page
    assert "<script>" not in page
