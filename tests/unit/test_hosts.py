import json

import pytest

from appliance.config.macs import normalize_mac
from appliance.domain import hosts
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.state import db


@pytest.fixture
def conn(tmp_path):
    return db.connect(tmp_path / "nixie.db")


def snapshot(conn):
    return (conn.execute("SELECT * FROM hosts ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM host_macs ORDER BY mac").fetchall())


@pytest.mark.parametrize("raw, want", [
    ("BC:24:11:D0:28:34", "bc:24:11:d0:28:34"),
    ("bc-24-11-d0-28-34", "bc:24:11:d0:28:34"),
    ("bc24.11d0.2834", "bc:24:11:d0:28:34"),
    ("bc2411d02834", "bc:24:11:d0:28:34"),
])
def test_normalize_mac(raw, want):
    assert normalize_mac(raw) == want


@pytest.mark.parametrize("raw", ["", "bc:24:11:d0:28", "zz:24:11:d0:28:34", "bc:24:11:d0:28:34:00",
                                 "01:00:5e:00:00:01", "b:c24:11:d0:28:34", None, 42])
def test_bad_macs(raw):
    with pytest.raises(InvalidInput):
        normalize_mac(raw)


def test_add_show_list_remove(conn):
    h = hosts.add_host(conn, "web1", ["BC:24:11:00:00:01"], "github:me/infra")
    assert h["attr"] == "nixosConfigurations.web1"
    assert h["macs"] == ["bc:24:11:00:00:01"]
    assert h["state"] == "unknown" and h["mode"] == "netboot"
    assert hosts.find_by_mac(conn, "bc:24:11:00:00:01")["name"] == "web1"
    assert [x["name"] for x in hosts.list_hosts(conn)] == ["web1"]
    hosts.remove_host(conn, "web1")
    with pytest.raises(NotFound):
        hosts.get_host(conn, "web1")
    assert conn.execute("SELECT count(*) FROM host_macs").fetchone()[0] == 0


def test_bad_input_changes_nothing(conn):
    hosts.add_host(conn, "web1", ["bc:24:11:00:00:01"], "github:me/infra")
    before = snapshot(conn)
    for args, err in [
        (("web2", ["nope"], "f"), InvalidInput),
        (("web2", ["bc:24:11:00:00:01"], "f"), Conflict),  # MAC taken
        (("web1", ["bc:24:11:00:00:09"], "f"), Conflict),  # name taken
        (("Web_2", ["bc:24:11:00:00:09"], "f"), InvalidInput),
        (("web2", ["bc:24:11:00:00:09", "bad"], "f"), InvalidInput),
        (("web2", ["bc:24:11:00:00:09"], ""), InvalidInput),
    ]:
        with pytest.raises(err):
            hosts.add_host(conn, *args)
    with pytest.raises(InvalidInput):
        hosts.add_host(conn, "web2", ["bc:24:11:00:00:09"], "f", mode="disk")
    assert snapshot(conn) == before


def test_update_host(conn):
    hosts.add_host(conn, "web1", ["bc:24:11:00:00:01"], "github:me/infra")
    h = hosts.update_host(conn, "web1", mode="install", macs=["bc:24:11:00:00:02", "bc:24:11:00:00:03"])
    assert h["mode"] == "install" and h["macs"] == ["bc:24:11:00:00:02", "bc:24:11:00:00:03"]
    assert hosts.find_by_mac(conn, "bc:24:11:00:00:01") is None


def test_import_nixie_hosts_json(conn):
    text = json.dumps({"machine1": {"mac_address": "bc:24:11:d0:28:34"},
                       "machine2": {"mac_address": "BC:24:11:D0:28:35"}})
    r = hosts.import_hosts(conn, text, default_flake="./examples")
    assert r == {"added": ["machine1", "machine2"], "updated": []}
    h = hosts.get_host(conn, "machine2")
    assert h["macs"] == ["bc:24:11:d0:28:35"] and h["flake"] == "./examples"


def test_import_is_all_or_nothing(conn):
    hosts.add_host(conn, "taken", ["bc:24:11:00:00:99"], "f")
    before = snapshot(conn)
    bad = json.dumps({"a": {"mac_address": "bc:24:11:00:00:01"}, "b": {"mac_address": "bc:24:11:00:00:99"}})
    with pytest.raises(Conflict):
        hosts.import_hosts(conn, bad, default_flake="f")
    for text in ["[1]", "{", json.dumps({"a": {"mac_address": "x"}}),
                 json.dumps({"a": {"mac_address": "bc:24:11:00:00:01", "ram": 4}}),
                 json.dumps({"a": {"mac_address": "bc:24:11:00:00:01"}})]:  # no flake
        with pytest.raises(InvalidInput):
            hosts.import_hosts(conn, text)
    assert snapshot(conn) == before


def test_export_round_trips(conn, tmp_path):
    hosts.add_host(conn, "a", ["bc:24:11:00:00:01", "bc:24:11:00:00:02"], "github:x/y", mode="install")
    hosts.add_host(conn, "b", ["bc:24:11:00:00:03"], "github:x/y", attr="packages.x86_64-linux.b")
    text = hosts.export_hosts(conn)
    data = json.loads(text)
    assert data["a"]["mac_address"] == "bc:24:11:00:00:01"  # Nixie reads this form
    other = db.connect(tmp_path / "other.db")
    hosts.import_hosts(other, text)
    assert hosts.export_hosts(other) == text
    r = hosts.import_hosts(other, text, replace=True)
    assert r["updated"] == ["a", "b"]


def test_wol_magic_packet_with_secureon():
    from appliance.router.wol import magic_packet

    p = magic_packet("bc:24:11:aa:bb:cc", password="01:02:03:04:05:06")
    assert p[:6] == b"\xff" * 6 and p[6:102] == bytes.fromhex("bc2411aabbcc") * 16
    assert p[102:] == bytes([1, 2, 3, 4, 5, 6])
    assert len(magic_packet("bc:24:11:aa:bb:cc", password="abcd")) == 106
    with pytest.raises(ValueError):
        magic_packet("bc:24:11:aa:bb:cc", password="toolong")
