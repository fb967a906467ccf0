"""Cached netboot for real (issue 17 item 4): a BIOS VM in mode `cached` PXE-boots every
time, and its stage 1 keeps /nix/store on the VM's virtio disk, fetching from the router
only the store paths the disk lacks.

`nixie serve` (our DHCP, TFTP, HTTP boot, the build worker on the real `nix`) builds the
lab system; `nixie host set demo --mode cached` (the CLI: the UI and API call the same
domain function). Three power-ons of one BIOS VM:

1. a disk too small for the system: the stage 1 reports `failed` with the reason;
2. the disk replaced by an empty one: the stage 1 creates the layout (the install's own
   code), fetches the whole closure, switches root to the disk, and the system reports
   `booted` with boot mode `cached` — a retry that works;
3. after a one-path change (a new generation whose toplevel alone differs) the next boot
   fetches less than 10 % of the closure's bytes, and the new generation runs from the
   disk (console and agent say so).

The bytes are counted from the router's `boot.path` events (one per archive sent, with its
size), as a test or an admin reads them from the host's timeline."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from lab import flake as labflake
from lab.qemu import PxeVM, create_disk
from tests.conftest import run_nixie
from tests.vm.pxe_lab import add_and_build, appliance_serving, build
from tests.vm.test_install_disk import host, host_events, wait_until

MAC = "52:54:00:4e:58:41"
DISK_MIB = 256
SMALL_DISK_MIB = 24
TIMEOUT = 300


def power_on(ns, tmp: Path, disk: Path, tag: str) -> PxeVM:
    return PxeVM(ns, "br-lan", "bios", MAC, tmp / f"vm-{tag}", memory_mb=512, disk=disk).start()


def last_event_id(cfg: Path) -> int:
    return max((e["id"] for e in host_events(cfg, "demo")), default=0)


def since(cfg: Path, first_id: int) -> list[dict]:
    return [e for e in host_events(cfg, "demo") if e["id"] > first_id]


def wait_state(cfg: Path, state: str, after: int, vm: PxeVM) -> bool:
    """Until the host has a `host.<state>` event newer than `after`."""
    return wait_until(lambda: any(e["kind"] == f"host.{state}" for e in since(cfg, after)),
                      TIMEOUT, [vm])


def boot(ns, tmp: Path, cfg: Path, disk: Path, tag: str, state: str) -> tuple[list[dict], str, float]:
    """Power the VM on with `disk` until the host reports `state`: (the host's events of
    this boot, the console, seconds from power-on). The VM is stopped whatever happens."""
    mark = last_event_id(cfg)
    t0 = time.monotonic()
    vm = power_on(ns, tmp, disk, tag)
    try:
        assert wait_state(cfg, state, mark, vm), vm.console()[-3000:]
        took = time.monotonic() - t0
        console = vm.console()
    finally:
        vm.stop()
    return since(cfg, mark), console, took


def fetched_bytes(evs: list[dict]) -> int:
    return sum(e["data"]["bytes"] for e in evs if e["kind"] == "boot.path"
               and e["data"]["status"] == "completed")


@pytest.mark.timeout(1200)
def test_cached_netboot_fetches_only_what_the_disk_lacks(tmp_path):
    tmp = tmp_path
    flake = labflake.materialise(tmp / "flake", release=f"cached 1 {uuid.uuid4()}")
    disk = tmp / "disk.img"
    figures = {}
    with appliance_serving(tmp) as (ns, cfg, _):
        add_and_build(cfg, flake, {"demo": MAC})
        r = run_nixie("host", "set", "demo", "--mode", "cached", config=cfg)
        assert r.returncode == 0, r.stderr
        assert host(cfg, "demo")["mode"] == "cached"

        # 1. a disk too small: failed, with the reason, on the timeline and the console
        create_disk(disk, SMALL_DISK_MIB)
        evs, console, _ = boot(ns, tmp, cfg, disk, "small", "failed")
        failed = [e for e in evs if e["kind"] == "host.failed"][-1]
        assert "cached boot failed: disk /dev/vda is too small: 24 MiB" in failed["message"], failed
        assert "NIXIE-CACHED-FAILED disk /dev/vda is too small" in console
        h = host(cfg, "demo")
        assert (h["state"], h["mode"]) == ("failed", "cached"), h

        # 2. an empty disk of the right size: layout made, whole closure fetched, booted
        create_disk(disk, DISK_MIB)
        gen1 = h["generations"][0]["toplevel"]
        evs, console, figures["first boot s"] = boot(ns, tmp, cfg, disk, "first", "booted")
        listed = [e for e in evs if e["kind"] == "boot.closure"][-1]["data"]
        first = fetched_bytes(evs)
        figures["closure bytes"], figures["first fetched"] = listed["bytes"], first
        # every path of the closure came over the wire (the toplevel is fetched first, to
        # read its disk layout), and only in the archives the listing announced
        assert first == listed["bytes"], (first, listed)
        assert len([e for e in evs if e["kind"] == "boot.path"]) == listed["paths"]
        for marker in ("NIXIE-CACHED partition: /dev/vda", "NIXIE-CACHED format:",
                       f"NIXIE-CACHED-FETCHED {listed['paths']} {listed['paths']}",
                       "NIXIE-STAGE1-CACHED /dev/vda", f"NIXIE-CACHED-BOOT demo {gen1}",
                       "NIXIE-REPORTED"):
            assert marker in console, f"no {marker}\n{console[-3000:]}"
        # the kernel line named the stage 1 alone: the closure initrd was never sent
        assert not [e for e in evs if e["kind"] == "boot.initrd"], evs
        h = host(cfg, "demo")
        assert (h["state"], h["boot_mode"]) == ("booted", "cached"), h

        # 3. a one-path change: a new generation, and the next boot fetches only that path
        labflake.set_release(flake, f"cached 2 {uuid.uuid4()}")
        assert build(cfg, "demo")["status"] == "succeeded"
        h = host(cfg, "demo")
        gen2 = h["generations"][0]["toplevel"]
        assert gen2 != gen1 and h["current_generation"] == 2
        evs, console, figures["second boot s"] = boot(ns, tmp, cfg, disk, "second", "booted")
        second = fetched_bytes(evs)
        figures["second fetched"] = second
        paths = [e["data"]["path"] for e in evs if e["kind"] == "boot.path"]
        assert paths == [Path(gen2).name], paths  # the one path that changed, nothing else
        assert second < 0.10 * listed["bytes"], figures
        assert "NIXIE-CACHED layout: /dev/vda holds its root filesystem" in console
        assert "NIXIE-CACHED partition:" not in console  # the disk was kept
        assert f"NIXIE-CACHED-BOOT demo {gen2}" in console, console[-3000:]
        booted = [e for e in evs if e["kind"] == "host.booted"][-1]
        assert gen2 in booted["message"] and "mode cached" in booted["message"], booted
        assert f"fetched 1 of {listed['paths']} store paths" in booted["message"], booted
        h = host(cfg, "demo")
        assert (h["state"], h["boot_mode"]) == ("booted", "cached"), h
        kernel = sum(e["data"]["bytes"] for e in evs if e["kind"] in ("boot.kernel", "boot.stage1")
                     and e["data"].get("status") == "completed")
        figures["kernel+stage1 per boot"] = kernel
    print("cached netboot figures:", json.dumps(figures))
