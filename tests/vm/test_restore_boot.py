"""A VM boots from a restored router. Router A builds `demo` with the real nix and is backed
up while it runs; router B starts from an empty state dir with that archive staged (the web
UI's restore path: serve restores it first thing) and serves the restored generation: one
BIOS VM (SeaBIOS -> iPXE ROM) PXE-boots it to `booted`. Costs one BIOS TCG boot (~1-2 min)."""

from __future__ import annotations

import json
import uuid

from appliance.state import backup
from lab import flake as labflake
from lab.qemu import PxeVM
from tests.conftest import run_nixie
from tests.vm.pxe_lab import add_and_build, appliance_serving, wait_booted

MAC = "52:54:00:4e:58:31"
BOOT_TIMEOUT = 420


def test_a_vm_boots_from_the_restored_router(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"restore-boot {uuid.uuid4()}")
    archive = tmp_path / "router.tar.gz"
    (tmp_path / "a").mkdir()
    with appliance_serving(tmp_path / "a") as (_ns, cfg_a, _):
        add_and_build(cfg_a, flake, {"demo": MAC})
        assert run_nixie("backup", str(archive), config=cfg_a).returncode == 0
        built = json.loads(run_nixie("host", "show", "demo", "--json", config=cfg_a).stdout)
    state_b = tmp_path / "b" / "state"
    state_b.mkdir(parents=True, mode=0o700)
    backup.pending_path(state_b).write_bytes(archive.read_bytes())
    with appliance_serving(tmp_path / "b") as (ns, cfg_b, _):
        assert "restored the staged backup" in (tmp_path / "b" / "serve.log").read_text()
        restored = json.loads(run_nixie("host", "show", "demo", "--json", config=cfg_b).stdout)
        assert restored["generations"] == built["generations"]
        with PxeVM(ns, "br-lan", "bios", MAC, tmp_path / "vms") as vm:
            states = wait_booted(cfg_b, ["demo"], BOOT_TIMEOUT)
            console = vm.console()[-2500:]
    h = states["demo"]
    assert h["state"] == "booted", f"demo is {h['state']}:\n{console}"
    assert "NIXIE-STAGE2" in console
    kinds = [e["kind"] for e in h["events"]]
    for step in ("boot.script", "boot.kernel", "boot.initrd", "host.booted"):
        assert step in kinds, f"no {step} event in {sorted(set(kinds))}"
