"""The `nixie` command, run as a real subprocess on a real state DB."""

import argparse
import dataclasses
import json
import sqlite3

from appliance.cli import main
from appliance.config.schema import load_config
from appliance.domain import settings
from appliance.router import network
from appliance.state import db, kv
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
    r = run_nixie("serve", config=cfg, timeout=20)  # exits, not serves
    assert r.returncode == 2
    assert "dhcp.mdoe" in r.stderr and "unknown key" in r.stderr
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


# ------------------------------------------------------------------ layout


def test_every_verb_lives_in_its_group_module():
    """main.py only assembles: each leaf's function comes from a group module
    that registered it, and `python -m appliance.cli.main` is the command."""
    seen = {}

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sp in action.choices.items():
                    walk(sp, (*path, name))
        func = parser.get_default("func")
        if func is not None:
            seen[" ".join(path)] = func.__module__

    walk(main.build_parser(), ())
    groups = {g.__name__ for g in main.GROUPS}
    assert set(seen.values()) <= groups and "appliance.cli.main" not in seen.values()
    assert seen["config set"] == seen["config show"] == "appliance.cli.config"
    assert seen["host rollback"] == "appliance.cli.hosts"
    assert seen["firewall"] == seen["net apply"] == "appliance.cli.network"
    assert seen["wol"] == "appliance.cli.power"
    r = run_nixie("config", "--help")
    assert r.returncode == 0 and "show" in r.stdout and "set" in r.stdout


# ------------------------------------------------------------------ config show / set


def show(config_file) -> dict:
    r = run_nixie("config", "show", "--json", config=config_file)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_config_set_stores_what_show_reports(config_file):
    before = show(config_file)
    assert set(before) == set(settings.EDITABLE)
    assert before["boot.menu_timeout_seconds"] == {"value": 5, "source": "file"}
    r = run_nixie("config", "set", "boot.menu_timeout_seconds=7",
                  "boot.cmdline=console=ttyS0 nixie.test=1", config=config_file)
    assert r.returncode == 0, r.stderr
    # no serve runs: the change waits for it
    assert r.stdout.splitlines() == ["boot.menu_timeout_seconds = 7",
                                     'boot.cmdline = "console=ttyS0 nixie.test=1"',
                                     "saved; applies when nixie serve starts"]
    after = show(config_file)
    assert after["boot.menu_timeout_seconds"] == {"value": 7, "source": "override"}
    assert after["boot.cmdline"] == {"value": "console=ttyS0 nixie.test=1", "source": "override"}
    # JSON values: a list, a boolean
    r = run_nixie("config", "set", "boot.menu=false",
                  'builder.substituters=["http://cache.lab.nixie"]', "--json", config=config_file)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["outcome"] == "saved" and out["changed"] == ["boot.menu", "builder.substituters"]
    assert out["values"]["boot.menu"] is False
    # the file's own value again: the override is gone
    r = run_nixie("config", "set", "boot.menu_timeout_seconds=5", config=config_file)
    assert r.returncode == 0, r.stderr
    assert show(config_file)["boot.menu_timeout_seconds"] == {"value": 5, "source": "file"}
    r = run_nixie("config", "set", "boot.menu_timeout_seconds=5", config=config_file)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "unchanged"


def test_config_set_bad_key_or_value_names_the_key_and_stores_nothing(config_file):
    assert run_nixie("config", "set", "boot.menu_timeout_seconds=9",
                     config=config_file).returncode == 0
    before = show(config_file)
    r = run_nixie("config", "set", "boot.menu_timeout_seconds=3", "boot.menu_timeout=3",
                  config=config_file)
    assert r.returncode == 1
    assert r.stderr == "nixie: 'boot.menu_timeout' is not a setting that can be changed here\n"
    # a valid key given with a bad one is not stored either (all or nothing)
    r = run_nixie("config", "set", "boot.cmdline=quiet", "boot.menu_timeout_seconds=abc",
                  config=config_file)
    assert r.returncode == 1
    assert r.stderr.startswith("nixie: boot.menu_timeout_seconds: ") and '"abc"' in r.stderr
    r = run_nixie("config", "set", "dhcp.lease_seconds=-5", config=config_file)
    assert r.returncode == 1 and r.stderr.startswith("nixie: dhcp.lease_seconds: ")
    r = run_nixie("config", "set", 'dhcp.range=["127.0.0.150", "127.0.0.120"]', config=config_file)
    assert r.returncode == 1
    assert r.stderr == "nixie: dhcp.range: last address 127.0.0.120 is before first 127.0.0.150\n"
    # the config's cross-checks name the key at fault too
    r = run_nixie("config", "set", "builder.kind=remote", config=config_file)
    assert r.returncode == 1
    assert r.stderr == "nixie: builder.uri: is required when builder.kind is remote\n"
    # not KEY=VALUE at all: a usage error
    r = run_nixie("config", "set", "boot.menu", config=config_file)
    assert r.returncode == 2 and "expected KEY=VALUE, got 'boot.menu'" in r.stderr
    assert show(config_file) == before


def test_locked_key_is_shown_with_its_file_and_refused(config_file):
    cfg = json.loads(config_file.read_text())
    cfg["locked"] = ["dhcp.range"]
    config_file.write_text(json.dumps(cfg))
    rows = show(config_file)
    assert rows["dhcp.range"] == {"value": ["127.0.0.100", "127.0.0.199"], "source": "locked",
                                  "path": str(config_file)}
    r = run_nixie("config", "show", config=config_file)
    assert r.returncode == 0
    line = next(x for x in r.stdout.splitlines() if x.startswith("dhcp.range "))
    assert line.split()[-2:] == ["locked", f"({config_file})"]
    r = run_nixie("config", "set", 'dhcp.range=["127.0.0.110", "127.0.0.120"]',
                  config=config_file)
    assert r.returncode == 1
    assert r.stderr == (f"nixie: dhcp.range is set by the deployment ({config_file}) "
                        "and cannot be changed here\n")
    assert show(config_file) == rows


def put_network_settings(config_file, **changes) -> None:
    """Confirmed network settings in the DB, as `nixie net confirm` or the
    Network page leave them (the kernel side needs root: not here)."""
    assert run_nixie("status", config=config_file).returncode == 0  # makes the DB
    cfg = load_config(config_file)
    conn = db.connect(cfg.db_path)
    kv.put(conn, settings.NETWORK_KEY,
           dataclasses.replace(network.settings_from_config(cfg), **changes).to_dict())
    conn.close()


def test_verbs_act_on_the_running_configuration(config_file):
    """What serve runs with, not the file alone: the firewall renders the
    overridden LAN interface, a reservation must fit the confirmed LAN."""
    r = run_nixie("config", "set", "lan.interface=lan7", config=config_file)
    assert r.returncode == 0, r.stderr
    r = run_nixie("firewall", "show", config=config_file)
    assert r.returncode == 0, r.stderr
    assert 'iifname "lan7" tcp dport' in r.stdout and 'iifname "lo" tcp dport' not in r.stdout
    # 127.0.5.5 is in the file's LAN (127.0.0.1/8), not in the confirmed 127.0.0.1/24
    put_network_settings(config_file, lan_interface="lan8", lan_address="127.0.0.1/24")
    rows = show(config_file)
    assert rows["lan.interface"] == {"value": "lan8", "source": "network"}
    assert rows["dhcp.range"]["source"] == "file"
    r = run_nixie("host", "add", "r1", "--mac", "52:54:00:00:01:01", "--flake", "f",
                  "--ip", "127.0.5.5", config=config_file)
    assert r.returncode == 1
    assert "127.0.5.5 is not a host address of the LAN network 127.0.0.0/24" in r.stderr
    r = run_nixie("host", "add", "r1", "--mac", "52:54:00:00:01:01", "--flake", "f",
                  "--ip", "127.0.0.50", config=config_file)
    assert r.returncode == 0, r.stderr
    assert 'iifname "lan8"' in run_nixie("firewall", "show", config=config_file).stdout


def test_show_stored_settings_the_file_no_longer_accepts(config_file):
    """The file moved the LAN away from a stored DHCP range: serve runs the file's
    values (`settings.effective_config`), and `config show` says so once."""
    cfg = json.loads(config_file.read_text())
    cfg["dhcp"]["mode"] = "authoritative"  # the range must be in the LAN
    config_file.write_text(json.dumps(cfg))
    r = run_nixie("config", "set", 'dhcp.range=["127.0.0.150", "127.0.0.160"]',
                  config=config_file)
    assert r.returncode == 0, r.stderr
    assert show(config_file)["dhcp.range"]["source"] == "override"
    cfg["lan"]["address"] = "10.1.0.1/24"
    cfg["dhcp"]["range"] = ["10.1.0.100", "10.1.0.200"]
    config_file.write_text(json.dumps(cfg))
    r = run_nixie("config", "show", "--json", config=config_file)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dhcp.range"] == {"value": ["10.1.0.100", "10.1.0.200"],
                                                 "source": "file"}
    assert r.stderr.splitlines() == [
        "nixie: the stored settings do not fit the config file (config: dhcp.range[0]: "
        "127.0.0.150 is outside the LAN network 10.1.0.0/24); the file's values run"]
