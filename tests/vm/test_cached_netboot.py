"""Cached netboot for real (issue 17 item 4): a BIOS VM in mode `cached` PXE-boots every
time, and its stage 1 keeps /nix/store on the VM's virtio disk, fetching from the router
only the store paths the disk lacks.

`nixie serve` (our DHCP, TFTP, HTTP boot, the build worker on the real `nix`) builds the
lab system; `nixie host set demo --mode cached` (the CLI: the UI and API call the same
domain function). The system's kernel line carries `nixie.fetch_tries=4` (each fetch
tried 4 times, 2 s apart, instead of 20) so the router can stay away beyond the budget
quickly. Four power-ons of one BIOS VM:

1. a disk too small for the system: the stage 1 reports `failed` with the reason;
2. the disk replaced by an empty one, and the router's HTTP boot unreachable (an nft rule
   in the router's namespace resets the TCP) from the moment the layout is made, beyond
   the retry budget: the stage 1 prints the failure with the reason, keeps trying to
   report, and once the rule is gone the host is `failed` with that reason;
3. the next power-on retries: the layout is kept, and the router is unreachable again
   mid-fetch, only until the stage 1 has retried once; the boot completes, the system
   reports `booted` with boot mode `cached`, and the disk (read offline) holds every path
   of the closure whole (its NAR equals the router's) and nothing else;
4. two paths damaged on the disk offline, one file truncated (a size the manifest sees)
   and 16 bytes of another path's file inverted (same size: only its content differs),
   the router's `boot.cmdline` set to `nixie.verify=content`, and a one-path change (a
   new generation whose toplevel alone differs): the next boot fetches the new toplevel
   and the two damaged paths again, nothing else (less than 10 % of the closure's
   bytes), says it checked content, the new generation runs from the disk (console and
   agent say so) and both paths are whole again.

The bytes are counted from the router's `boot.path` events (one per archive sent, with its
size), as a test or an admin reads them from the host's timeline."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from lab import flake as labflake
from lab.qemu import PxeVM, create_disk
from tests.conftest import run_nixie
from tests.vm.pxe_lab import add_and_build, appliance_serving, build
from tests.vm.test_install_disk import debugfs, host, host_events, partitions, wait_until

MAC = "52:54:00:4e:58:41"
DISK_MIB = 256
SMALL_DISK_MIB = 24
TIMEOUT = 300
FETCH_TRIES = 4
BOOT_PORT = 8081
# resets the VM's TCP to the router's HTTP boot (the agent API is on the same port)
BLOCK = f"""table inet cachedtest {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "br-lan" tcp dport {BOOT_PORT} reject with tcp reset
  }}
}}
"""


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


def router_away(ns) -> None:
    ns.run("nft", "-f", "-", input=BLOCK)


def router_back(ns) -> None:
    ns.run("nft", "delete", "table", "inet", "cachedtest", check=False)


def wait_console(vm: PxeVM, marker: str) -> None:
    assert vm.wait_for(marker, timeout=TIMEOUT) == marker, f"no {marker}\n{vm.console()[-3000:]}"


def boot(ns, tmp: Path, cfg: Path, disk: Path, tag: str, state: str, during=None
         ) -> tuple[list[dict], str, float]:
    """Power the VM on with `disk` until the host reports `state`: (the host's events of
    this boot, the console, seconds from power-on). `during(vm)` runs first, after
    power-on. The VM is stopped, and the router reachable, whatever happens."""
    mark = last_event_id(cfg)
    t0 = time.monotonic()
    vm = power_on(ns, tmp, disk, tag)
    try:
        if during is not None:
            during(vm)
        assert wait_state(cfg, state, mark, vm), vm.console()[-3000:]
        took = time.monotonic() - t0
        console = vm.console()
    finally:
        router_back(ns)
        vm.stop()
    return since(cfg, mark), console, took


def root_offset(disk: Path) -> int:
    parts = partitions(disk)
    assert [p[1] for p in parts] == [0xEF, 0x83], parts
    return parts[1][2] * 512


def nar_sha256(path: str | Path) -> str:
    return hashlib.sha256(subprocess.run(["nix-store", "--dump", str(path)], check=True,
                                         capture_output=True).stdout).hexdigest()


def store_offline(disk: Path, out: Path) -> Path:
    """The disk's /nix, read out of the image (debugfs): its `store` directory."""
    out.mkdir()
    debugfs(disk, root_offset(disk), f"rdump -p /nix {out}")
    return out / "nix" / "store"


def check_store_whole(disk: Path, toplevel: str, out: Path) -> None:
    """Every path of the toplevel's closure is on the disk with the router's content (its
    NAR), nothing else is in /nix/store, and no unpacked fetch is left beside it."""
    store = store_offline(disk, out)
    closure = subprocess.run(["nix-store", "-qR", toplevel], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(p.name for p in store.iterdir()) == sorted(Path(p).name for p in closure)
    for p in closure:
        assert nar_sha256(store / Path(p).name) == nar_sha256(p), p
    assert not (store.parent / ".nixie" / "partial").exists()
    for kept in ("manifests", "sha256"):  # each path's manifest and its files' sha256
        assert sorted(m.name for m in (store.parent / ".nixie" / kept).iterdir()) == \
            sorted(Path(p).name for p in closure), kept


def damage(disk: Path, basename: str, tmp: Path) -> None:
    """Truncate the store path `basename` (one file) on the disk image offline: half its
    bytes, as a cut write or a bad sector leaves it."""
    whole = Path("/nix/store") / basename
    half = tmp / "half"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    cmds = tmp / "damage.debugfs"
    cmds.write_text(f"cd /nix/store\nrm {basename}\nwrite {half} {basename}\n")
    r = subprocess.run(["debugfs", "-w", "-f", str(cmds), f"{disk}?offset={root_offset(disk)}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "rror" not in r.stderr, r.stderr


def flip(disk: Path, basename: str, rel: str, tmp: Path, at: int = 200) -> None:
    """Invert 16 bytes of the file `rel` of the store path `basename` on the disk image
    offline: the same size (the manifest does not see it), other content."""
    data = bytearray((Path("/nix/store") / basename / rel).read_bytes())
    assert len(data) >= at + 16, len(data)
    data[at:at + 16] = bytes(b ^ 0xFF for b in data[at:at + 16])
    flipped = tmp / "flipped"
    flipped.write_bytes(bytes(data))
    parent, name = f"/nix/store/{basename}/{rel}".rsplit("/", 1)
    cmds = tmp / "flip.debugfs"
    cmds.write_text(f"cd {parent}\nrm {name}\nwrite {flipped} {name}\n")
    r = subprocess.run(["debugfs", "-w", "-f", str(cmds), f"{disk}?offset={root_offset(disk)}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "rror" not in r.stderr, r.stderr


def set_fetch_tries(flake: Path, tries: int) -> None:
    """The demo system's kernel line with `nixie.fetch_tries=`: a per-system parameter."""
    f = flake / "flake.nix"
    text = f.read_text()
    assert 'hostName = "demo";' in text
    f.write_text(text.replace('hostName = "demo";', 'hostName = "demo"; kernelParams = '
                              f'[ "console=ttyS0" "panic=-1" "nixie.fetch_tries={tries}" ];'))
    labflake.commit(flake, "fetch tries")


def fetched_bytes(evs: list[dict]) -> int:
    return sum(e["data"]["bytes"] for e in evs if e["kind"] == "boot.path"
               and e["data"]["status"] == "completed")


@pytest.mark.timeout(1200)
def test_cached_netboot_fetches_only_what_the_disk_lacks(tmp_path):
    tmp = tmp_path
    flake = labflake.materialise(tmp / "flake", release=f"cached 1 {uuid.uuid4()}")
    set_fetch_tries(flake, FETCH_TRIES)
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

        # 2. an empty disk, and the router away for good once the layout is made: the
        # failure on the console with its reason, and `failed` once the router is back
        create_disk(disk, DISK_MIB)
        gen1 = h["generations"][0]["toplevel"]

        def away_for_good(vm):
            wait_console(vm, "NIXIE-CACHED format:")
            router_away(ns)
            wait_console(vm, "NIXIE-REPORT-RETRY")  # it tried to report `failed`: refused
            assert not [e for e in host_events(cfg, "demo") if e["kind"] == "host.failed"
                        and "fetching" in e["message"]]
            router_back(ns)

        evs, console, figures["router away: power-on to failed s"] = boot(
            ns, tmp, cfg, disk, "away", "failed", away_for_good)
        failed = [e for e in evs if e["kind"] == "host.failed"][-1]["message"]
        assert "cached boot failed: fetching " in failed and "http://10.77.0.1:8081 failed: " \
            f"{FETCH_TRIES} tries, the last: wget: " in failed, failed
        assert f"NIXIE-CACHED-RETRY {FETCH_TRIES - 1} of {FETCH_TRIES}: " in console
        assert "NIXIE-CACHED-FAILED fetching " in console and "NIXIE-REPORTED-FAILED" in console
        h = host(cfg, "demo")
        assert (h["state"], h["mode"]) == ("failed", "cached"), h

        # 3. the next power-on retries: the router away mid-fetch until the stage 1 retried
        # once, then back; the boot completes and the disk holds the closure, whole
        def away_a_moment(vm):
            wait_console(vm, "NIXIE-CACHED layout: /dev/vda holds its root filesystem")
            router_away(ns)
            wait_console(vm, "NIXIE-CACHED-RETRY 1 of")
            router_back(ns)

        evs, console, figures["retry boot s"] = boot(ns, tmp, cfg, disk, "first", "booted",
                                                     away_a_moment)
        listed = [e for e in evs if e["kind"] == "boot.closure"][-1]["data"]
        figures["closure bytes"] = listed["bytes"]
        fetched = console.split("NIXIE-CACHED-FETCHED ")[1].split()
        got, count, got_bytes, kept = (int(w) for w in fetched[:4])
        assert count == listed["paths"] and got + kept == count and got >= 1, fetched
        # what the router sent whole is what the stage 1 moved in (a cut archive is not)
        assert fetched_bytes(evs) == got_bytes, (fetched, evs)
        for marker in ("NIXIE-CACHED partition:", "NIXIE-CACHED format:"):
            assert marker not in console  # the layout the failed boot made was kept
        for marker in ("NIXIE-STAGE1-CACHED /dev/vda", f"NIXIE-CACHED-BOOT demo {gen1}",
                       "NIXIE-REPORTED"):
            assert marker in console, f"no {marker}\n{console[-3000:]}"
        # the kernel line named the stage 1 alone: the closure initrd was never sent
        assert not [e for e in evs if e["kind"] == "boot.initrd"], evs
        booted = [e for e in evs if e["kind"] == "host.booted"][-1]["message"]
        assert "; sizes checked in " in booted and "nixie.verify=" not in console, booted
        h = host(cfg, "demo")
        assert (h["state"], h["boot_mode"]) == ("booted", "cached"), h
        check_store_whole(disk, gen1, tmp / "offline-1")

        # 4. two paths damaged on the disk offline (one file truncated; 16 bytes of the
        # boot loaders' mbr.bin inverted, same size), the content check turned on for every
        # host, and a one-path change (a new generation): the next boot fetches exactly
        # those three paths
        closure1 = subprocess.run(["nix-store", "-qR", gen1], capture_output=True, text=True,
                                  check=True).stdout.split()
        victim = next(Path(p).name for p in closure1 if p.endswith("-udhcpc-script"))
        flipped = next(Path(p).name for p in closure1 if p.endswith("-nixie-lab-bootloaders"))
        damage(disk, victim, tmp)
        flip(disk, flipped, "mbr.bin", tmp)
        r = run_nixie("config", "set", "boot.cmdline=nixie.verify=content", "--json", config=cfg)
        assert r.returncode == 0 and json.loads(r.stdout)["outcome"] == "applied", r.stdout
        labflake.set_release(flake, f"cached 2 {uuid.uuid4()}")
        assert build(cfg, "demo")["status"] == "succeeded"
        h = host(cfg, "demo")
        gen2 = h["generations"][0]["toplevel"]
        assert gen2 != gen1 and h["current_generation"] == 2
        evs, console, figures["second boot s"] = boot(ns, tmp, cfg, disk, "second", "booted")
        paths = [e["data"]["path"] for e in evs if e["kind"] == "boot.path"]
        assert sorted(paths) == sorted([Path(gen2).name, victim, flipped]), paths
        assert " nixie.verify=content" in console  # the router's kernel line carried it
        assert f"NIXIE-CACHED damaged: {victim} differs from its manifest" in console
        assert f"NIXIE-CACHED damaged: {flipped} content differs from its sha256 sums" \
            in console, console[-3000:]
        assert console.count("NIXIE-CACHED damaged:") == 2, console[-3000:]
        second = sum(e["data"]["bytes"] for e in evs if e["kind"] == "boot.path"
                     and e["data"]["path"] == Path(gen2).name)
        figures["second fetched (the changed path)"] = second
        figures["damaged paths fetched again"] = fetched_bytes(evs) - second
        assert second < 0.10 * listed["bytes"], figures
        assert "NIXIE-CACHED layout: /dev/vda holds its root filesystem" in console
        assert "NIXIE-CACHED partition:" not in console  # the disk was kept
        assert f"NIXIE-CACHED-BOOT demo {gen2}" in console, console[-3000:]
        booted = [e for e in evs if e["kind"] == "host.booted"][-1]
        assert gen2 in booted["message"] and "mode cached" in booted["message"], booted
        assert f"fetched 3 of {listed['paths']} store paths" in booted["message"], booted
        assert "2 damaged fetched again; content checked in " in booted["message"], booted
        figures["content check s"] = float(booted["message"].split("content checked in ")[1]
                                           .split()[0])
        h = host(cfg, "demo")
        assert (h["state"], h["boot_mode"]) == ("booted", "cached"), h
        store = store_offline(disk, tmp / "offline-2")
        for whole in (victim, flipped):
            assert nar_sha256(store / whole) == nar_sha256(Path("/nix/store") / whole), whole
        kernel = sum(e["data"]["bytes"] for e in evs if e["kind"] in ("boot.kernel", "boot.stage1")
                     and e["data"].get("status") == "completed")
        figures["kernel+stage1 per boot"] = kernel
    print("cached netboot figures:", json.dumps(figures))
