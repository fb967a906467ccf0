"""Stateless mode's verdict (`StatelessRun.check`, asked every heartbeat by `nixie
serve --hosts`): an install host is done only once it has booted from its disk, and
a timeout names each host still pending and what it waits for. The same run against
real VMs is in tests/vm/test_install_disk.py; the timeout through a real serve in
tests/netns/test_stateless.py."""

from __future__ import annotations

import json

import pytest

from appliance.domain import hosts, localboot
from appliance.runtime import stateless
from appliance.state.db import Store

pytestmark = pytest.mark.unit


@pytest.fixture
def conn(tmp_path):
    return Store(tmp_path / "nixie.db").conn()


def _prepare(conn, entries: dict) -> stateless.StatelessRun:
    run = stateless.prepare(conn, json.dumps(entries), "path:/flake")
    run.timeout = 3600
    return run


def _set(conn, name: str, state: str, boot_mode: str | None = None) -> None:
    h = hosts.get_host(conn, name)
    hosts.set_state(conn, h["id"], state, message="test")
    if boot_mode:
        localboot.set_boot_mode(conn, h["id"], boot_mode)


def test_install_hosts_are_done_after_their_first_boot_from_disk(conn):
    run = _prepare(conn, {"a": {"mac_address": "52:54:00:00:00:01", "mode": "install"},
                          "b": {"mac_address": "52:54:00:00:00:02"}})
    assert run.install == {"a"}
    _set(conn, "b", "booted", "netboot")
    assert run.check(conn) is None
    _set(conn, "a", "installing", "install")
    assert run.check(conn) is None
    # installed (the router moved it to mode local) is not enough: the reboot must work
    _set(conn, "a", "installed", "install")
    conn.execute("UPDATE hosts SET mode = 'local' WHERE name = 'a'")
    assert run.check(conn) is None
    # a netboot report is not a boot from the disk
    _set(conn, "a", "booted", "netboot")
    assert run.check(conn) is None
    _set(conn, "a", "booted", "local")
    assert run.check(conn) == 0
    assert run.reason == "all hosts done: a, b"


def test_timeout_names_what_each_host_waits_for(conn):
    run = _prepare(conn, {"a": {"mac_address": "52:54:00:00:00:01", "mode": "install"},
                          "c": {"mac_address": "52:54:00:00:00:03", "mode": "install"}})
    _set(conn, "a", "installed", "install")
    run.timeout = 0
    assert run.check(conn) == 1
    assert run.reason.startswith("timed out after 0 s waiting for ")
    assert "a (installed, waiting for its first boot from disk)" in run.reason
    assert "c (not seen yet)" in run.reason


def test_a_failed_install_ends_the_run_with_its_host(conn):
    run = _prepare(conn, {"a": {"mac_address": "52:54:00:00:00:01", "mode": "install"}})
    _set(conn, "a", "installing", "install")
    h = hosts.get_host(conn, "a")
    hosts.set_state(conn, h["id"], "failed", message="install failed: disk /dev/vda is too small")
    assert run.check(conn) == 1
    assert run.reason == "host a failed: install failed: disk /dev/vda is too small"


def test_states_from_an_earlier_run_on_the_same_state_dir_do_not_count(conn):
    """`--state-dir` keeps state between runs: a host that failed before is retried
    (not a failure of this run), one installed before must install and boot again."""
    first = _prepare(conn, {"a": {"mac_address": "52:54:00:00:00:01", "mode": "install"},
                            "b": {"mac_address": "52:54:00:00:00:02", "mode": "install"}})
    _set(conn, "a", "failed")
    _set(conn, "b", "booted", "local")
    assert first.check(conn) == 1
    again = _prepare(conn, {"a": {"mac_address": "52:54:00:00:00:01", "mode": "install"},
                            "b": {"mac_address": "52:54:00:00:00:02", "mode": "install"}})
    assert again.check(conn) is None
    _set(conn, "a", "booted", "local")
    assert again.check(conn) is None
    _set(conn, "b", "booted", "local")
    assert again.check(conn) == 0
