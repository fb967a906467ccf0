"""nixos-image/installer/nixie-install: the exact command lines it runs (nix-store, disko,
nix copy, nixos-install, reboot exist only on NixOS: recording executables stand in for
them) and the reports the real nixie-agent sends to a recording router in a namespace.

PATH holds only the recording tools and a few busybox applets (text tools, wget), and the
script runs under dash, so nothing on this machine can be partitioned or rebooted by it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.agent_recorder import AGENT, PORT, busybox_bin, recording_router
from tests.conftest import ROOT

INSTALLER = ROOT / "nixos-image" / "installer" / "nixie-install"
SYSTEM = "/nix/store/0c7pnkwyzbbbglsk5cm9k4jpr2b9mr2d-nixos-system-node1-25.05"
CACHE = f"http://127.0.0.1:{PORT}/nix-cache"
TOOLS = ("nix-store", "nix", "nixos-install", "sync", "reboot")

RECORDING_TOOL = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
sys.exit(int(os.environ.get("FAIL_" + os.path.basename(sys.argv[0]).replace("-", "_"), "0")))
"""


@pytest.fixture
def bench(tmp_path):
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed")
    if "busybox" in os.path.realpath("/bin/sh"):
        pytest.skip("/bin/sh is busybox, which would run its reboot applet instead of the fake")
    bindir = busybox_bin(tmp_path / "bin")
    (bindir / "sh").unlink()
    log = tmp_path / "calls.jsonl"
    log.touch()
    tool = RECORDING_TOOL.format(python=sys.executable, log=str(log))
    for name in TOOLS:
        (bindir / name).write_text(tool)
        (bindir / name).chmod(0o755)
    disko = tmp_path / "disko-script"
    disko.write_text(tool)
    disko.chmod(0o755)
    (bindir / "nixie-agent").symlink_to(AGENT)
    (tmp_path / "router").mkdir()
    with recording_router(tmp_path / "router") as rec:
        def run(cmdline: str, **env):
            (tmp_path / "cmdline").write_text(cmdline)
            base = {"PATH": str(bindir), "NIXIE_CMDLINE": str(tmp_path / "cmdline"),
                    "NIXIE_TRUSTED_KEYS": "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
                    "NIXIE_AGENT_ATTEMPTS": "1", "TMPDIR": str(tmp_path), **env}
            # dash, never busybox sh: busybox's shell runs its own applets (reboot!)
            # before anything on PATH
            argv = ["env", "-i", *[f"{k}={v}" for k, v in base.items()], "/bin/sh", str(INSTALLER)]
            r = subprocess.run(rec.ns.argv(*argv), capture_output=True, text=True, timeout=120)
            calls = [json.loads(line) for line in log.read_text().splitlines()]
            return r, calls, rec.events()

        yield run, str(disko)


def cmdline(disko: str, extra: str = "") -> str:
    return (f"initrd=initrd init={SYSTEM}/init nixie.api=http://127.0.0.1:{PORT}/ "
            f"nixie.token=tok123 nixie.system={SYSTEM} nixie.disko={disko} "
            f"nixie.cache_key=nixie-router-1:AAAAbase64key= {extra}\n")


KEYS = ("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY= "
        "nixie-router-1:AAAAbase64key=")


def test_install_runs_the_exact_steps_and_reports_them(bench):
    run, disko = bench
    r, calls, events = run(cmdline(disko))
    assert r.returncode == 0, r.stderr
    assert calls == [
        ["nix-store", "--realise", disko, "--option", "substituters", CACHE,
         "--option", "trusted-public-keys", KEYS, "--max-jobs", "0"],
        [os.path.basename(disko)],
        ["nix", "--extra-experimental-features", "nix-command", "copy", "--from", CACHE,
         "--to", "/mnt", SYSTEM, "--option", "trusted-public-keys", KEYS],
        ["nixos-install", "--root", "/mnt", "--system", SYSTEM, "--no-root-passwd",
         "--no-channel-copy", "--option", "substituters", CACHE,
         "--option", "trusted-public-keys", KEYS],
        ["sync"],
        ["reboot"],
    ]
    assert [e["event"] for e in events] == ["installing"] * 4 + ["installed"]
    assert events[-1]["message"] == SYSTEM
    assert "copying " + SYSTEM in events[2]["message"]
    assert "tok123" not in r.stdout + r.stderr


def test_a_failed_step_stops_the_install_and_reports_failed(bench):
    run, disko = bench
    r, calls, events = run(cmdline(disko, "nixie.noreboot"), FAIL_disko_script="3")
    assert r.returncode == 3
    assert [c[0] for c in calls] == ["nix-store", os.path.basename(disko)]
    assert [e["event"] for e in events] == ["installing", "installing", "failed"]
    assert events[-1]["message"] == "install failed while partitioning (exit 3)"


def test_noreboot_stays_up(bench):
    run, disko = bench
    r, calls, events = run(cmdline(disko, "nixie.noreboot"))
    assert r.returncode == 0, r.stderr
    assert calls[-1][0] == "nixos-install"
    assert events[-1]["event"] == "installed"


def test_missing_parameters_are_reported_and_nothing_runs(bench):
    run, disko = bench
    r, calls, events = run(f"nixie.api=http://127.0.0.1:{PORT} nixie.token=tok123 "
                           f"nixie.disko={disko}\n")
    assert r.returncode == 2
    assert "nixie.system= is missing" in r.stderr
    assert calls == []
    assert [e["event"] for e in events] == ["failed"]


def test_without_nixie_disko_the_systems_own_layout_is_applied(bench, tmp_path):
    """What the router sends (nixie.mode=install nixie.system=, no nixie.disko=): the
    installer applies the layout the system carries, <system>/nixie-disko (linked by
    nixosModules.netboot-client from the flake's disko configuration)."""
    run, disko = bench
    system = tmp_path / "system"
    system.mkdir()
    (system / "nixie-disko").symlink_to(disko)
    r, calls, events = run(f"nixie.api=http://127.0.0.1:{PORT}/ nixie.token=tok123 "
                           f"nixie.mode=install nixie.system={system} nixie.noreboot\n")
    assert r.returncode == 0, r.stderr
    assert calls[0][:3] == ["nix-store", "--realise", disko]
    assert calls[1] == [os.path.basename(disko)]
    assert calls[-1][:5] == ["nixos-install", "--root", "/mnt", "--system", str(system)]
    assert [e["event"] for e in events] == ["installing"] * 4 + ["installed"]
