"""A host's BMC record and its secret, hosts.json with BMCs, the drivers' command lines, and
what the web UI and API show when a BMC fails (loopback only: a port nothing listens on)."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat

import pytest

from appliance.domain import bmc, events, hosts
from appliance.domain.bmc import Bmc, Credentials
from appliance.errors import InvalidInput, NotFound
from appliance.logs import LogfmtFormatter
from appliance.router.bmc import power
from appliance.router.bmc.driver import BmcAuthFailed, BmcError
from appliance.router.bmc.ipmi import IpmiDriver, rmcp_ping
from appliance.state import db
from tests.webapp import csrf_of, logged_in_client, make_app

PW = "s3cret-Pass:word"


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "nixie.db")
    hosts.add_host(c, "srv", "52:54:00:00:00:01", "f")
    return c


def ipmi(**over):
    return bmc.parse_input({"kind": "ipmi", "address": "10.0.0.5", "username": "admin",
                            "password": PW, **over})


def secret_files(tmp_path):
    d = tmp_path / bmc.SECRETS_DIR
    return sorted(p for p in d.iterdir()) if d.exists() else []


def test_password_is_a_0600_file_never_in_the_record_or_the_database(conn, tmp_path):
    b = bmc.set_bmc(conn, "srv", ipmi())
    assert b.port == 623 and b.kind == "ipmi" and "password" not in b.public()
    [f] = secret_files(tmp_path)
    assert f.read_text() == PW
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f.parent).st_mode) == 0o700
    conn.execute("PRAGMA wal_checkpoint(FULL)")
    for p in tmp_path.glob("nixie.db*"):
        assert PW.encode() not in p.read_bytes()
    assert PW not in json.dumps(events.recent(conn, limit=50))
    assert bmc.credentials(conn, "srv").password == PW
    assert PW not in repr(bmc.credentials(conn, "srv"))


def test_changing_without_password_keeps_it_and_a_new_one_replaces_the_file(conn, tmp_path):
    bmc.set_bmc(conn, "srv", ipmi())
    bmc.set_bmc(conn, "srv", bmc.parse_input({"kind": "redfish", "address": "bmc.example",
                                              "username": "root", "verify_tls": False}))
    c = bmc.credentials(conn, "srv")
    assert (c.bmc.kind, c.bmc.port, c.bmc.verify_tls, c.password) == ("redfish", 443, False, PW)
    bmc.set_bmc(conn, "srv", ipmi(password="other"))
    [f] = secret_files(tmp_path)
    assert f.read_text() == "other"


@pytest.mark.parametrize("over, field", [
    ({"kind": "amt"}, "kind"),
    ({"address": "https://10.0.0.5/redfish"}, "address"),
    ({"address": ""}, "address"),
    ({"port": 70000}, "port"),
    ({"username": "a b"}, "username"),
    ({"password": "two\nlines"}, "password"),
    ({"system_id": "../x"}, "system_id"),
    ({"verify_tls": "no"}, "verify_tls"),
    ({"extra": 1}, "extra"),
])
def test_bad_input_is_refused_and_nothing_is_stored(conn, tmp_path, over, field):
    with pytest.raises(InvalidInput) as e:
        bmc.set_bmc(conn, "srv", ipmi(**over))
    assert e.value.field == field
    assert bmc.get_bmc(conn, "srv") is None and secret_files(tmp_path) == []


def test_first_setting_needs_a_password_and_unknown_hosts_are_not_found(conn, tmp_path):
    with pytest.raises(InvalidInput, match="password is required"):
        bmc.set_bmc(conn, "srv", bmc.parse_input({"kind": "ipmi", "address": "10.0.0.5",
                                                  "username": "admin"}))
    assert secret_files(tmp_path) == []
    with pytest.raises(NotFound):
        bmc.set_bmc(conn, "nope", ipmi())
    assert secret_files(tmp_path) == []


def test_clear_and_host_removal_delete_the_secret(conn, tmp_path):
    bmc.set_bmc(conn, "srv", ipmi())
    assert bmc.clear_bmc(conn, "srv") and secret_files(tmp_path) == []
    bmc.set_bmc(conn, "srv", ipmi())
    hosts.remove_host(conn, "srv")
    assert secret_files(tmp_path) == []


def test_hosts_json_bmc_import_and_export_without_then_with_secrets(conn, tmp_path):
    text = json.dumps({"web1": {"mac_address": "52:54:00:00:00:02", "flake": "f", "bmc": {
        "kind": "redfish", "address": "10.0.0.9", "username": "root", "password": PW,
        "verify_tls": False, "system_id": "System.Embedded.1"}}})
    hosts.import_hosts(conn, text)
    out = json.loads(hosts.export_hosts(conn))
    assert out["web1"]["bmc"] == {"kind": "redfish", "address": "10.0.0.9", "port": 443,
                                  "username": "root", "verify_tls": False,
                                  "system_id": "System.Embedded.1"}
    assert PW not in hosts.export_hosts(conn)
    assert "bmc" not in out["srv"]
    full = hosts.export_hosts(conn, with_secrets=True)
    assert json.loads(full)["web1"]["bmc"]["password"] == PW
    other = db.connect(tmp_path / "other" / "nixie.db")
    hosts.import_hosts(other, full)
    assert bmc.credentials(other, "web1").password == PW


def test_hosts_json_with_a_bad_bmc_imports_nothing(conn, tmp_path):
    text = json.dumps({
        "a": {"mac_address": "52:54:00:00:00:03", "flake": "f",
              "bmc": {"kind": "ipmi", "address": "10.0.0.1", "username": "u", "password": "p"}},
        "b": {"mac_address": "52:54:00:00:00:04", "flake": "f",
              "bmc": {"kind": "ipmi", "address": "10.0.0.2", "username": "u"}}})  # no password
    with pytest.raises(InvalidInput, match="password is required"):
        hosts.import_hosts(conn, text)
    assert hosts.count_hosts(conn) == 1 and secret_files(tmp_path) == []


def test_ipmitool_gets_the_password_from_the_environment_not_the_command_line():
    creds = Credentials(Bmc(1, "srv", "ipmi", "10.0.0.5", 623, "admin", True, None, None, None,
                            None), PW)
    argv = IpmiDriver(creds).argv("power", "status")
    assert PW not in " ".join(argv) and "-E" in argv and argv[:3] == ["ipmitool", "-I", "lanplus"]


def test_log_lines_mask_a_password_passed_by_mistake():
    rec = logging.LogRecord("nixie.bmc", logging.INFO, "", 0, "BMC password=%s", (PW,), None)
    rec.password = PW
    assert PW not in LogfmtFormatter().format(rec)


class FakeDriver:
    """A BMC for the flow tests below: records calls, fails when told to."""

    def __init__(self, state="off", fail=None):
        self.state, self.fail, self.calls = state, fail, []

    def __call__(self, creds):
        return self

    def _do(self, name):
        if self.fail:
            raise self.fail
        self.calls.append(name)

    def status(self):
        self._do("status")
        return self.state

    def on(self):
        self._do("on")

    def off(self):
        self._do("off")

    def cycle(self):
        self._do("cycle")

    def set_next_boot_pxe(self):
        self._do("pxe")


@pytest.mark.parametrize("state, then", [("off", "on"), ("on", "cycle")])
def test_boot_now_sets_pxe_once_then_powers_on_or_cycles(conn, state, then):
    bmc.set_bmc(conn, "srv", ipmi())
    d = FakeDriver(state)
    out = power.boot_from_network(conn, "srv", interface="lo", drivers=d)
    assert d.calls == ["pxe", "status", then] and (out.via, out.action) == ("bmc", then)


def test_boot_now_falls_back_to_wake_on_lan_when_the_bmc_fails(conn):
    bmc.set_bmc(conn, "srv", ipmi())
    out = power.boot_from_network(conn, "srv", interface="lo",
                                  drivers=FakeDriver(fail=BmcAuthFailed("refused")))
    assert out.via == "wol" and out.bmc_error == "refused"
    kinds = [e["kind"] for e in events.recent(conn, limit=10)]
    assert {"host.power_failed", "host.power_fallback", "host.wol"} <= set(kinds)


def test_poll_records_changes_once_and_a_failing_bmc_once(conn):
    bmc.set_bmc(conn, "srv", ipmi())
    d = FakeDriver("on")
    assert power.poll_power(conn, drivers=d) == {"srv": "on"}
    assert power.poll_power(conn, drivers=d) == {"srv": "on"}
    d.state = "off"
    power.poll_power(conn, drivers=d)
    assert [e["data"]["power_state"] for e in events.recent(conn, kind="host.power_state")] \
        == ["off", "on"]
    d.fail = BmcError("gone")
    power.poll_power(conn, drivers=d)
    power.poll_power(conn, drivers=d)
    assert len(events.recent(conn, kind="host.power_unknown")) == 1
    b = bmc.get_bmc(conn, "srv")
    assert b.power_state == "off" and b.last_error == "gone"  # the last known state stays


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rmcp_ping_to_a_closed_port_is_refused():
    assert rmcp_ping("127.0.0.1", free_udp_port(), timeout=1) == "refused"


def test_ui_and_api_show_a_failing_bmc_and_never_the_password(tmp_path):
    app, store, _cfg = make_app(tmp_path / "state")
    client = logged_in_client(app)
    c = store.conn()
    hosts.add_host(c, "srv", "52:54:00:00:00:01", "f")
    token = csrf_of(client.get("/hosts/srv").data)
    r = client.post("/hosts/srv/bmc", data={"csrf_token": token, "kind": "ipmi",
                                            "address": "127.0.0.1", "port": free_udp_port(),
                                            "username": "admin", "password": PW,
                                            "verify_tls": "y"})
    assert r.status_code == 302
    page = client.get("/hosts/srv").data.decode()
    assert PW not in page and "ipmi admin@127.0.0.1" in page
    r = client.post("/hosts/srv/power/on", data={"csrf_token": csrf_of(page)},
                    follow_redirects=True)
    page = r.data.decode()
    assert "Power on failed, nothing changed" in page and "nothing listens on UDP port" in page
    assert 'id="bmc-error"' in page and PW not in page
    assert bmc.get_bmc(c, "srv").power_state is None
    assert events.recent(c, kind="host.power_failed")[0]["level"] == "error"
    # the host list has a power column
    assert "<th>Power</th>" in client.get("/hosts/").data.decode()

    headers = {"X-CSRFToken": csrf_of(page)}
    got = client.get("/api/v1/hosts/srv/bmc").json
    assert got["kind"] == "ipmi" and "password" not in got and PW not in json.dumps(got)
    r = client.post("/api/v1/hosts/srv/power", json={"action": "status"}, headers=headers)
    assert r.status_code == 502 and "nothing listens" in r.json["error"]
    r = client.put("/api/v1/hosts/srv/bmc", json={"kind": "redfish", "address": "127.0.0.1",
                                                  "port": 1, "username": "root"},
                   headers=headers)
    assert r.status_code == 200 and r.json["kind"] == "redfish"
    r = client.post("/api/v1/hosts/srv/power", json={"action": "on"}, headers=headers)
    assert r.status_code == 502 and "unreachable" in r.json["error"]
    assert PW not in client.get("/api/v1/hosts-json").data.decode()
    assert PW in client.get("/api/v1/hosts-json?with_secrets=true").data.decode()
    assert client.delete("/api/v1/hosts/srv/bmc", headers=headers).status_code == 204
    assert client.get("/api/v1/hosts/srv/bmc").status_code == 404
