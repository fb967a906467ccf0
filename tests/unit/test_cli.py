"""The `nixie` command, run as a real subprocess on a real state DB."""

import json
import sqlite3
import time

from tests.conftest import run_nixie


def db_dump(config_file):
    cfg = json.loads(config_file.read_text())
    conn = sqlite3.connect(f"{cfg['state_dir']}/nixie.db")
    return [list(conn.execute(f"SELECT * FROM {t} ORDER BY rowid")) for t in ("hosts", "host_macs")]


def test_help_lists_verbs():
    r = run_nixie("--help")
    assert r.returncode == 0
    for verb in ("serve", "flake", "host", "lease", "build", "wol", "status", "admin", "config"):
        assert verb in r.stdout
    r = run_nixie("host", "--help")
    for sub in ("add", "list", "show", "remove", "import", "export"):
        assert sub in r.stdout


def test_host_verbs_and_json(config_file):
    r = run_nixie("host", "add", "web1", "--mac", "BC:24:11:00:00:01", "--flake", "github:me/infra",
                  config=config_file)
    assert r.returncode == 0, r.stderr
    r = run_nixie("host", "list", "--json", config=config_file)
    rows = json.loads(r.stdout)
    assert [(h["name"], h["macs"]) for h in rows] == [("web1", ["bc:24:11:00:00:01"])]
    r = run_nixie("host", "show", "web1", "--json", config=config_file)
    h = json.loads(r.stdout)
    assert h["state"] == "unknown" and h["ip"] is None
    assert any(e["kind"] == "host.added" for e in h["events"])
    r = run_nixie("host", "show", "nope", config=config_file)
    assert r.returncode != 0 and "no host named 'nope'" in r.stderr


def test_bad_mac_exits_nonzero_and_db_unchanged(config_file):
    assert run_nixie("host", "add", "a", "--mac", "bc:24:11:00:00:01", "--flake", "f",
                     config=config_file).returncode == 0
    before = db_dump(config_file)
    r = run_nixie("host", "add", "b", "--mac", "bc:24:11:00:00:0g", "--flake", "f", config=config_file)
    assert r.returncode == 1
    assert "not a MAC address" in r.stderr
    r = run_nixie("host", "add", "a", "--mac", "bc:24:11:00:00:02", "--flake", "f", config=config_file)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert db_dump(config_file) == before


def test_import_export_round_trip(config_file, tmp_path):
    f = tmp_path / "hosts.json"
    f.write_text(json.dumps({"machine1": {"mac_address": "bc:24:11:d0:28:34"}}))
    r = run_nixie("host", "import", str(f), "--flake", "./examples", config=config_file)
    assert r.returncode == 0, r.stderr
    r = run_nixie("host", "export", config=config_file)
    data = json.loads(r.stdout)
    assert data["machine1"]["mac_address"] == "bc:24:11:d0:28:34"
    assert data["machine1"]["flake"] == "./examples"


def test_serve_bad_config_exits_2_naming_key(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"state_dir": str(tmp_path), "dhcp": {"mdoe": "proxy"}}))
    t0 = time.monotonic()
    r = run_nixie("serve", config=cfg, timeout=20)
    assert r.returncode == 2
    assert "dhcp.mdoe" in r.stderr and "unknown key" in r.stderr
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "nixie.db").exists()  # refused before touching state


def test_config_example_is_accepted(tmp_path):
    r = run_nixie("config", "example", "--state-dir", str(tmp_path))
    path = tmp_path / "c.json"
    path.write_text(r.stdout)
    r = run_nixie("config", "check", config=path)
    assert r.returncode == 0, r.stderr


def test_admin_create_user_and_status(config_file):
    r = run_nixie("admin", "create-user", "admin", "--password-stdin", config=config_file,
                  input="correct horse battery\n")
    assert r.returncode == 0, r.stderr
    r = run_nixie("admin", "create-user", "admin", "--password-stdin", config=config_file,
                  input="another password\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run_nixie("status", "--json", config=config_file)
    assert json.loads(r.stdout)["serve"]["running"] is False


def test_flake_add_list_remove(config_file):
    r = run_nixie("flake", "add", "--no-wait", "--json", "github:me/infra", config=config_file)
    assert r.returncode == 0 and json.loads(r.stdout)["eval_state"] == "queued"
    r = run_nixie("flake", "add", "github:me/infra", config=config_file)
    assert r.returncode == 1 and "already added" in r.stderr
    rows = json.loads(run_nixie("flake", "list", "--json", config=config_file).stdout)
    assert [f["url"] for f in rows] == ["github:me/infra"]
    assert run_nixie("flake", "remove", "github:me/infra", config=config_file).returncode == 0
    assert json.loads(run_nixie("flake", "list", "--json", config=config_file).stdout) == []
