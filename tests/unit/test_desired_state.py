"""The one runtime config: resolution (file ⊕ overrides ⊕ network settings, locked
keys), the supervisor replacing one service, and the applier putting a part back
when its new instance fails. The effects on real clients are in
tests/netns/test_desired_state.py and tests/browser/test_desired_state_browser.py."""

from __future__ import annotations

import threading
import time

import pytest

from appliance.config.resolve import changed_keys, network_values, resolve
from appliance.config.schema import example_config, parse_config
from appliance.domain import events, settings
from appliance.errors import ConfigError, InvalidInput
from appliance.runtime.supervisor import Supervisor
from appliance.state import kv
from appliance.state.db import Store
from tests.applier_lab import applying, runtime_with


def base(**top):
    data = example_config(state_dir="/tmp/nixie-unit")
    data.update(top)
    return parse_config(data, "/etc/nixie/config.json")


NET = {"lan_interface": "br1", "lan_address": "10.77.0.1/24", "lan_ports": [],
       "wan_interface": "eth1", "wan_mode": "dhcp", "wan_address": None, "wan_gateway": None,
       "routes": []}


@pytest.mark.parametrize("overrides,network,key,want", [
    ({}, None, "dhcp.range", ["10.77.0.100", "10.77.0.200"]),
    ({"dhcp.range": ["10.77.0.150", "10.77.0.160"]}, None, "dhcp.range", ["10.77.0.150", "10.77.0.160"]),
    ({"boot.menu_timeout_seconds": 0}, None, "boot.menu_timeout_seconds", 0),
    ({"lan.interface": "eth7"}, None, "lan.interface", "eth7"),
    # the confirmed network settings come last
    ({"lan.interface": "eth7"}, NET, "lan.interface", "br1"),
    ({}, NET, "wan.interface", "eth1"),
    ({}, NET | {"wan_mode": "none"}, "wan.interface", None),
    ({}, NET | {"wan_mode": "static", "wan_address": "192.0.2.2/24", "wan_gateway": "192.0.2.1"},
     "wan.gateway", "192.0.2.1"),
])
def test_resolution_order(overrides, network, key, want):
    node = resolve(base(), overrides, network).to_dict()
    for part in key.split("."):
        node = node[part]
    assert node == want


def test_locked_keys_keep_the_files_value():
    cfg = base(locked=["dhcp.range"])
    got = resolve(cfg, {"dhcp.range": ["10.77.0.150", "10.77.0.160"], "dhcp.lease_seconds": 120})
    assert got.dhcp.range == ["10.77.0.100", "10.77.0.200"] and got.dhcp.lease_seconds == 120


def test_locked_must_name_real_keys():
    with pytest.raises(ConfigError) as e:
        base(locked=["dhcp.rang"])
    assert e.value.key == "locked[0]"


def test_a_combination_the_file_refuses_names_the_key():
    with pytest.raises(ConfigError) as e:
        resolve(base(), {"dhcp.range": ["10.99.0.1", "10.99.0.9"]})
    assert e.value.key == "dhcp.range[0]"


def test_changed_keys_are_leaves_with_before_and_after():
    a = base()
    b = resolve(a, {"dhcp.lease_seconds": 90, "boot.cmdline": "quiet"})
    assert changed_keys(a, b) == {"dhcp.lease_seconds": (3600, 90), "boot.cmdline": (None, "quiet")}
    assert network_values(None) == {}


@pytest.fixture
def conn(tmp_path):
    return Store(tmp_path / "nixie.db").conn()


def test_settings_refuse_a_locked_key_and_store_nothing(conn):
    cfg = base(locked=["dhcp.range"])
    with pytest.raises(InvalidInput) as e:
        settings.update(cfg, conn, {"dhcp.range": ["10.77.0.150", "10.77.0.160"],
                                    "dhcp.lease_seconds": 120})
    assert e.value.field == "dhcp.range" and "/etc/nixie/config.json" in str(e.value)
    assert settings.overrides(conn) == {}
    assert settings.locked(cfg) == {"dhcp.range": "/etc/nixie/config.json"}


def test_renaming_the_lan_interface_follows_into_confirmed_network_settings(conn):
    cfg = base()
    kv.put(conn, settings.NETWORK_KEY, NET)
    settings.update(cfg, conn, {"lan.interface": "br9"}, who="t")
    assert settings.effective_config(cfg, conn).lan.interface == "br9"
    assert settings.network(conn)["lan_interface"] == "br9"


# ------------------------------------------------------------------ supervisor + applier

class Waiter:
    def __init__(self, name, fail=False, tag=""):
        self.name, self.fail, self.tag = name, fail, tag
        self.ran = threading.Event()

    def run(self, stop):
        self.ran.set()
        if self.fail:
            raise OSError(f"cannot bind {self.tag}")
        stop.wait()


def test_supervisor_replaces_one_service_and_leaves_the_others_running():
    a, b = Waiter("a"), Waiter("b")
    sup = Supervisor([a, b])
    sup.start()
    try:
        assert a.ran.wait(2) and b.ran.wait(2)
        b2 = Waiter("b")
        assert sup.replace("b", b2)
        assert b2.ran.wait(2)
        assert sup.get("b") is b2 and sup.get("a") is a
        assert sup.health()["services"]["a"]["state"] == "running"
        assert sup.health()["services"]["b"]["restarts"] == 0
        sup.replace("b", None)
        assert sup.get("b") is None and set(sup.health()["services"]) == {"a"}
    finally:
        assert sup.stop(2)


def test_applier_rebuilds_the_affected_part_and_restores_it_when_the_new_one_fails(tmp_path):
    store = Store(tmp_path / "nixie.db")
    conn = store.conn()
    cfg = base()
    built = []

    def build(c):
        svc = Waiter("dhcp", fail=c.lan.interface == "nope0", tag=c.lan.interface)
        built.append(svc)
        return svc

    other = Waiter("tftp")
    rt = runtime_with(cfg, store, dhcp=(build, None), tftp=(lambda c: other, None))
    with applying(rt) as sup:
        t = time.time()
        settings.update(cfg, conn, {"dhcp.lease_seconds": 120}, who="alice")
        st = settings.wait_applied(conn, t, 5)
        assert st["ok"] and st["services"] == ["dhcp"] and st["by"] == "alice"
        assert st["changed"] == {"dhcp.lease_seconds": [3600, 120]}
        assert sup.get("dhcp") is built[1] and sup.get("tftp") is other  # tftp untouched
        t = time.time()
        settings.update(cfg, conn, {"lan.interface": "nope0"}, who="alice")
        st = settings.wait_applied(conn, t, 5)
        assert not st["ok"] and "cannot bind nope0" in st["error"]
        # the part is back with the previous value, running
        assert sup.get("dhcp").tag == cfg.lan.interface
        assert sup.get("dhcp").ran.wait(2)
        kinds = [e["kind"] for e in events.recent(conn, limit=10)]
        assert "settings.apply_failed" in kinds and "settings.applied" in kinds


def test_the_web_part_is_rebuilt_only_after_the_outcome_is_recorded(tmp_path):
    """A change that moves the web UI's listeners (IPv6 on or off) rebuilds it, which
    cuts the connection the change came in on: the outcome that request waits for is
    recorded before the old web server is stopped, and a failing rebuild is recorded
    again as a failure."""
    store = Store(tmp_path / "nixie.db")
    conn = store.conn()
    cfg = base()
    seen_at_stop = []

    class Web(Waiter):
        def run(self, stop):
            self.ran.set()
            if self.fail:
                raise OSError("cannot bind [fd00::1]:8080")
            stop.wait()
            seen_at_stop.append(settings.apply_status(store.conn()))

    first = Web("web")
    built = iter([first, Web("web"), Web("web", fail=True), Web("web")])
    rt = runtime_with(cfg, store, web=(lambda c: next(built), None),
                      dhcp=(lambda c: Waiter("dhcp"), None))
    with applying(rt) as sup:
        t = time.time()
        settings.update(cfg, conn, {"ra.enable": False}, who="alice")
        st = settings.wait_applied(conn, t, 5)
        assert st["ok"] and st["services"] == ["web"], st
        assert first.ran.is_set()
        deadline = time.monotonic() + 5
        while not seen_at_stop and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen_at_stop and seen_at_stop[0]["at"] >= t  # recorded before the stop
        t = time.time()
        settings.update(cfg, conn, {"ra.enable": True}, who="alice")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            st = settings.apply_status(conn)
            if st["at"] >= t and not st["ok"]:
                break
            time.sleep(0.05)
        assert not st["ok"] and "cannot bind [fd00::1]:8080" in st["error"], st
        assert sup.get("web").ran.wait(2)  # the previous one put back
