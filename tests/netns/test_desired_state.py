"""What the admin sets is what runs, seen from outside a running `nixie serve`:
substituters changed through the REST API are on the next `nix build` command line;
a change that cannot be applied is reported and the previous settings keep serving
real DHCP clients; an added flake lists its configurations with no refresh, whether
the CLI evaluates it or serve's evaluator does."""

from __future__ import annotations

import json
import shlex
import uuid
from types import SimpleNamespace

import pytest

from lab import flake as labflake
from tests.conftest import run_nixie
from tests.netns.desired_lab import (
    WEB,
    add_client,
    admin_token,
    api,
    appliance_lan,
    last_event_id,
    request,
    settings_events,
    udhcpc_binding,
    udhcpc_lease,
    wait_for,
)
from tests.netns.dhcp_lab import in_range
from tests.nixlab import lab_config
from tests.vm.pxe_lab import build

RANGE = ("10.77.0.100", "10.77.0.200")
LEASE_SECONDS = 600  # the config file's


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One appliance for the module: serve on lan0 with DHCP, the web UI and a build
    worker, an admin's API token, and the lab flake (built by the real nix)."""
    tmp = tmp_path_factory.mktemp("desired")
    lan = appliance_lan(tmp, RANGE, dhcp={"lease_seconds": LEASE_SECONDS})
    try:
        lan.start()
        wait_for("the web UI", lambda: request(lan.router, "GET", WEB + "/healthz")[0] == 200)
        flake = labflake.materialise(tmp / "flake", release=f"desired-state {uuid.uuid4()}")
        yield SimpleNamespace(lan=lan, ns=lan.router, token=admin_token(lan.db), flake=flake,
                              tmp=tmp, pid=lan.proc.pid)
    finally:
        lan.close()


def applied_event(lab, after_id: int) -> dict:
    """The first settings.applied / settings.apply_failed event after `after_id`."""
    return wait_for("serve to apply the change",
                    lambda: next(iter(settings_events(lab.ns, lab.token, after_id)), None),
                    timeout=10)


def change(lab, values: dict) -> dict:
    """PATCH the settings as the admin; the apply event serve records for it."""
    before = last_event_id(lab.ns, lab.token)
    api(lab.ns, "PATCH", "/settings", lab.token, values)
    return applied_event(lab, before)


def nix_build_command(b: dict) -> list[str]:
    """The `nix build` command line the build worker wrote into the build's log."""
    with open(b["log_path"]) as f:
        lines = [ln for ln in f if ln.startswith("$ nix build ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0][2:])


def has_option(argv: list[str], name: str, value: str) -> bool:
    return any(argv[i:i + 3] == ["--option", name, value] for i in range(len(argv)))


def test_substituters_set_through_the_api_are_on_the_next_nix_build(lab, tmp_path):
    cache = tmp_path / "cache"  # a local binary cache, empty: the build still runs here
    cache.mkdir()
    (cache / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    r = run_nixie("host", "add", "demo", "--mac", "52:54:00:de:50:01", "--flake",
                  str(lab.flake), config=lab.lan.config)
    assert r.returncode == 0, r.stderr
    first = build(lab.lan.config, "demo")
    assert first["status"] == "succeeded", first
    assert not has_option(nix_build_command(first), "extra-substituters", f"file://{cache}")

    ev = change(lab, {"builder.substituters": [f"file://{cache}"]})
    assert ev["kind"] == "settings.applied", ev
    assert "builder" in ev["data"]["services"], ev
    labflake.set_release(lab.flake, f"desired-state {uuid.uuid4()}")  # a new system to build
    second = build(lab.lan.config, "demo")
    assert second["status"] == "succeeded", second
    assert second["toplevel"] != first["toplevel"]
    assert has_option(nix_build_command(second), "extra-substituters", f"file://{cache}"), \
        nix_build_command(second)
    assert json.loads(run_nixie("status", "--json", config=lab.lan.config).stdout
                      )["serve"]["pid"] == lab.pid


def test_a_change_that_cannot_be_applied_is_reported_and_the_old_settings_keep_serving(lab):
    add_client(lab.lan, "mvb1")
    add_client(lab.lan, "mvb2")
    try:
        ev = change(lab, {"lan.interface": "nosuch0"})  # the settings accept any name
        assert (ev["kind"], ev["level"]) == ("settings.apply_failed", "error"), ev
        assert ev["data"]["error"] == "dhcp: OSError: [Errno 19] DHCP on nosuch0 port 67: No such device", ev
        assert ev["message"].endswith(ev["data"]["error"]), ev
        assert in_range(udhcpc_lease(lab.lan, "mvb1"), *RANGE)
        # another change while the bad one is stored: refused again, and DHCP still
        # serves with what it ran
        ev = change(lab, {"dhcp.lease_seconds": 1800})
        assert ev["kind"] == "settings.apply_failed", ev
        assert ev["data"]["error"] == "dhcp: OSError: [Errno 19] DHCP on nosuch0 port 67: No such device", ev
        binding = udhcpc_binding(lab.lan, "mvb2")
        assert binding and in_range(binding.ip, *RANGE), binding
        assert binding.lease_seconds == LEASE_SECONDS, binding  # the lease time the client got
    finally:
        ev = change(lab, {"lan.interface": "lan0", "dhcp.lease_seconds": LEASE_SECONDS})
    assert ev["kind"] == "settings.applied", ev
    assert in_range(udhcpc_lease(lab.lan, "mvb2"), *RANGE)
    assert lab.lan.proc.poll() is None and lab.lan.status()["pid"] == lab.pid


def flake_rows(config) -> dict[str, dict]:
    r = run_nixie("flake", "list", "--json", config=config)
    assert r.returncode == 0, r.stderr
    return {row["url"]: row for row in json.loads(r.stdout)}


def test_flake_add_alone_lists_the_configurations_the_cli_evaluates(tmp_path):
    flake = labflake.materialise(tmp_path / "flake")
    cfg_path, _cfg = lab_config(tmp_path)  # no serve on this state
    r = run_nixie("flake", "add", str(flake), config=cfg_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    row = flake_rows(cfg_path)[str(flake)]
    assert (row["configurations"], row["eval_state"], row["last_error"]) == (
        ["demo", "demo2"], "idle", None), row


def test_flake_added_with_no_wait_is_evaluated_by_serve(lab, tmp_path):
    flake = labflake.materialise(tmp_path / "flake2")
    r = run_nixie("flake", "add", "--no-wait", str(flake), config=lab.lan.config)
    assert r.returncode == 0, r.stderr
    row = wait_for("serve's evaluator to list the flake",
                   lambda: (lambda f: f if f["eval_state"] == "idle" else None)(
                       flake_rows(lab.lan.config)[str(flake)]), timeout=120, every=0.5)
    assert (row["configurations"], row["last_error"]) == (["demo", "demo2"], None), row
