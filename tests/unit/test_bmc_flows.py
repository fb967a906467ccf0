"""The flows that end in a network boot: reinstall, and rebuild-and-reboot's watcher
(builds finished through the build worker's own record_success/record_failure). The BMC
is a real driver against a loopback port nothing listens on, or none: then Wake-on-LAN
goes out on lo. The real BMC and the magic packet on a LAN: tests/netns/test_bmc.py and
tests/netns/test_reboot_after_build.py."""

from __future__ import annotations

import json
import socket

import pytest

from appliance.cli.main import main as nixie_main
from appliance.config.schema import example_config
from appliance.domain import bmc, builds, events, hosts
from appliance.nix.buildworker import claim_next, record_failure, record_success
from appliance.router.bmc import flows
from appliance.runtime.reboot_watch import RebootAfterBuildWatcher
from appliance.state import db
from tests.webapp import csrf_of, logged_in_client, make_app


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "nixie.db")
    hosts.add_host(c, "srv", "52:54:00:00:00:01", "f")
    return c


def kinds(conn, n=20):
    return [e["kind"] for e in reversed(events.recent(conn, limit=n))]


def dead_ipmi(conn):
    bmc.set_bmc(conn, "srv", bmc.parse_input({
        "kind": "ipmi", "address": "127.0.0.1", "port": free_udp_port(), "username": "admin",
        "password": "pw"}))


def test_reinstall_sets_install_mode_and_falls_back_to_wake_on_lan(conn):
    dead_ipmi(conn)
    out = flows.reinstall(conn, "srv", interface="lo")
    assert hosts.get_host(conn, "srv")["mode"] == "install"
    assert out.via == "wol" and "nothing listens on UDP port" in out.bmc_error
    k = kinds(conn)
    assert k.index("host.updated") < k.index("host.reinstall") < k.index("host.power_failed") \
        < k.index("host.power_fallback") < k.index("host.wol")
    assert events.recent(conn, kind="host.wol")[0]["mac"] == "52:54:00:00:00:01"


def test_reinstall_of_an_unknown_host_changes_nothing(conn):
    with pytest.raises(hosts.NotFound):
        flows.reinstall(conn, "nope", interface="lo")
    assert "host.reinstall" not in kinds(conn)


def finish(conn, ok: bool):
    b = claim_next(conn)
    if ok:
        record_success(conn, b, "/nix/store/aaaa-nixos-system", "/tmp/none", keep=5)
    else:
        record_failure(conn, b, "error: attribute missing")
    return b["id"]


def test_a_succeeded_reboot_after_build_boots_the_host_once(conn):
    b = builds.enqueue(conn, "srv", reboot_after=True)
    assert builds.reboot_after(conn, b["id"])
    assert flows.reboot_finished_builds(conn, interface="lo") == []  # still queued
    assert finish(conn, ok=True) == b["id"]
    [r] = flows.reboot_finished_builds(conn, interface="lo")
    assert (r.build, r.status, r.outcome.via) == (b["id"], "succeeded", "wol")
    assert flows.reboot_finished_builds(conn, interface="lo") == []  # once
    assert len(events.recent(conn, kind="host.wol")) == 1
    assert kinds(conn)[-3:] == ["build.succeeded", "build.reboot", "host.wol"]


def test_a_failed_build_reboots_nothing_and_says_so(conn):
    b = builds.enqueue(conn, "srv", reboot_after=True)
    finish(conn, ok=False)
    [r] = flows.reboot_finished_builds(conn, interface="lo")
    assert (r.status, r.outcome) == ("failed", None)
    assert events.recent(conn, kind="host.wol") == []
    e = events.recent(conn, kind="build.reboot_skipped")[0]
    assert e["level"] == "warning" and e["data"]["build"] == b["id"]
    assert not builds.reboot_after(conn, b["id"])


def test_a_plain_build_reboots_nothing(conn):
    builds.enqueue(conn, "srv")
    finish(conn, ok=True)
    assert flows.reboot_finished_builds(conn, interface="lo") == []
    assert events.recent(conn, kind="host.wol") == []


def test_the_watcher_boots_through_the_bmc_fallback_and_counts(conn, tmp_path):
    dead_ipmi(conn)
    builds.enqueue(conn, "srv", reboot_after=True)
    finish(conn, ok=True)
    store = db.Store(tmp_path / "nixie.db")
    w = RebootAfterBuildWatcher(store, "lo")
    w.check_once()
    w.check_once()
    assert w.stats() == {"rebooted": 1, "skipped": 0}
    k = kinds(conn)
    assert k.count("host.power_fallback") == 1 and k.count("host.wol") == 1


def test_ui_api_and_cli_queue_reboot_after_and_reinstall(tmp_path, capsys):
    app, store, cfg = make_app(tmp_path / "state")
    client = logged_in_client(app)
    c = store.conn()
    hosts.add_host(c, "srv", "52:54:00:00:00:01", "f")
    page = client.get("/hosts/srv").data.decode()
    assert "Rebuild and reboot" in page and 'data-confirm="Reinstall srv?' in page
    r = client.post("/hosts/srv/rebuild-and-reboot", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 302
    first = builds.list_builds(c)[0]
    assert builds.reboot_after(c, first["id"])
    # without the CSRF token nothing happens
    assert client.post("/hosts/srv/reinstall").status_code == 400
    assert hosts.get_host(c, "srv")["mode"] == "netboot"
    r = client.post("/hosts/srv/reinstall", data={"csrf_token": csrf_of(page)},
                    follow_redirects=True)
    assert "Reinstalling: srv: Wake-on-LAN sent to 52:54:00:00:00:01" in r.data.decode()
    assert hosts.get_host(c, "srv")["mode"] == "install"

    headers = {"X-CSRFToken": csrf_of(page)}
    r = client.post("/api/v1/hosts/srv/build", json={"reboot": True}, headers=headers)
    assert r.status_code == 201 and builds.reboot_after(c, r.json["id"])
    r = client.post("/api/v1/hosts/srv/builds", headers=headers)
    assert r.status_code == 201 and not builds.reboot_after(c, r.json["id"])
    r = client.post("/api/v1/hosts/srv/build", json={"reboot": "yes"}, headers=headers)
    assert r.status_code == 400 and r.json["field"] == "reboot"
    hosts.update_host(c, "srv", mode="netboot")
    r = client.post("/api/v1/hosts/srv/reinstall", headers=headers)
    assert r.status_code == 200 and r.json["via"] == "wol"
    assert hosts.get_host(c, "srv")["mode"] == "install"
    assert client.post("/api/v1/hosts/nope/reinstall", headers=headers).status_code == 404

    path = tmp_path / "config.json"
    data = example_config(state_dir=str(cfg.state_dir), interface="lo", address="127.0.0.1/8")
    data["dhcp"]["range"] = ["127.0.0.100", "127.0.0.199"]
    path.write_text(json.dumps(data))
    hosts.update_host(c, "srv", mode="local")
    assert nixie_main(["--config", str(path), "host", "reinstall", "srv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["via"] == "wol"
    assert hosts.get_host(c, "srv")["mode"] == "install"
    assert nixie_main(["--config", str(path), "build", "srv", "--reboot", "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert builds.reboot_after(c, b["id"])
