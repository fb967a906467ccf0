"""serve's `gc` service: when it collects (on request, on schedule, never with 0) and the
disk use it reports, with warnings from gc.disk_warn_percent on."""

from __future__ import annotations

import pytest

from appliance.config.schema import example_config, parse_config
from appliance.nix import gc
from appliance.state import kv
from appliance.state.db import Store, now
from appliance.state.status import with_storage

pytestmark = pytest.mark.unit


def service(tmp_path, **over):
    data = example_config(state_dir=str(tmp_path / "state"), interface="lo", address="127.0.0.1/8")
    data["dhcp"]["range"] = ["127.0.0.100", "127.0.0.199"]
    data["gc"] = over
    cfg = parse_config(data, None)
    store = Store(cfg.db_path)
    return gc.GcService(cfg, store), store


def test_due_on_request_and_schedule_never_with_zero(tmp_path):
    svc, store = service(tmp_path, interval_seconds=3600)
    conn = store.conn()
    started = now()
    assert svc.due(conn, started) is None  # not at start
    gc.request(conn)
    assert gc.is_requested(conn) and svc.due(conn, started) == "request"
    kv.delete(conn, gc.REQUEST_KEY)
    assert svc.due(conn, started - 3601) == "schedule"  # an hour since start, never run
    kv.put(conn, gc.LAST_KEY, {"at": now()})
    assert svc.due(conn, started - 3601) is None  # ran just now
    off, store2 = service(tmp_path / "off", interval_seconds=0)
    assert off.due(store2.conn(), started - 10**6) is None
    gc.request(store2.conn())
    assert off.due(store2.conn(), started) == "request"  # on demand still works


def test_disk_use_and_its_warning_reach_the_health_report(tmp_path):
    svc, _store = service(tmp_path, disk_warn_percent=1)  # any used disk is over 1 %
    (tmp_path / "state" / "blob").write_bytes(b"x" * 100_000)
    disk = svc.measure()
    assert disk["state_dir"]["bytes"] >= 100_000
    assert {"state_dir", "nix_store"} <= {h for fs in disk["filesystems"] for h in fs["holds"]}
    assert disk["warnings"] and "DISK" in disk["warnings"][0]
    health = with_storage({"ok": True, "services": {"gc": {"stats": svc.stats()}}},
                          tmp_path / "state")
    assert health["ok"] is False and health["disk"] == disk
    assert disk["warnings"][0] in health["warnings"]
    quiet, _ = service(tmp_path / "q", disk_warn_percent=100)
    assert quiet.measure()["warnings"] == [] or all("100%" in w for w in quiet.disk["warnings"])
