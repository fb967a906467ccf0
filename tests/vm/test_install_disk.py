"""Install to disk for real: a BIOS VM and a UEFI VM with empty virtio disks, installed
by stateless mode (`nixie serve --hosts hosts.json --flake REF`, proxy-DHCP next to the
LAN's own DHCP server), then served by the appliance itself.

The router (our proxy-DHCP, TFTP, HTTP boot, build worker on the real `nix`) boots each
host, in mode install, into its lab system with `nixie.mode=install`; the system's
installer partitions the disk from the layout the system declares, formats it, copies
the netbooted closure into the disk's /nix/store with its registration, installs
extlinux (BIOS) and GRUB (UEFI), reports each step, and reboots. The router now answers
with the boot-from-disk script (BIOS: sanboot of the first disk; UEFI: exit to the
firmware's next boot entry, the disk), and the system booted from the disk reports
`booted` with boot mode `local`.

1. A stateless run with the BIOS host on a disk too small for its system: the installer
   reports `failed` with the reason and the run exits 1 with it.
2. The disk is replaced and a stateless run on the same state retries it, with the UEFI
   host too: it exits 0 only once both installed and booted from their disks.
3. `nixie serve` on that state (its own DHCP): a second power-on boots both from disk,
   and HTTP boot serves no kernel or initrd after the install (the events say so).
4. The disk images are read offline: the partition table, the MBR's boot code, the ESP's
   GRUB, and the root filesystem (debugfs), whose /nix/store holds the toplevel's whole
   closure and whose registration the real `nix` loads and verifies every path of
   against its content.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from lab import flake as labflake
from lab.netns import serving, start_serve, stop_processes, wait_port
from lab.qemu import PxeVM, create_disk
from tests.conftest import run_nixie
from tests.nixlab import NIX_EXTRA
from tests.vm.pxe_lab import MANUAL_BUILDER, OtherDhcpServer, router_namespace, vm_config

MACHINES = {"demo": ("52:54:00:4e:58:21", "bios"), "demo2": ("52:54:00:4e:58:22", "uefi")}
DISK_MIB = 256
SMALL_DISK_MIB = 24  # less than the lab system's closure
TIMEOUT = 480  # two TCG guests share two cores with the rest of the suite
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")


def host(cfg_path: Path, name: str) -> dict:
    return json.loads(run_nixie("host", "show", name, "--json", config=cfg_path).stdout)


def host_events(cfg_path: Path, name: str) -> list[dict]:
    """Every event on the host's timeline, oldest first."""
    r = run_nixie("events", "--host", name, "--limit", "2000", "--json", config=cfg_path)
    assert r.returncode == 0, r.stderr
    return sorted(json.loads(r.stdout), key=lambda e: e["id"])


def wait_until(check, timeout: float, vms: list[PxeVM]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if any(vm.proc is not None and vm.proc.poll() is not None for vm in vms):
            return check()
        time.sleep(2)
    return False


def local_boots(cfg_path: Path, name: str) -> int:
    return sum(1 for e in host_events(cfg_path, name) if e["kind"] == "boot.local")


def consoles(vms: list[PxeVM]) -> str:
    return "\n".join(f"--- {vm.firmware} ---\n{vm.console()[-3000:]}" for vm in vms)


def partitions(disk: Path) -> list[tuple[bool, int, int, int]]:
    """The MBR's partition entries: (active, type, first sector, sectors)."""
    with open(disk, "rb") as f:
        mbr = f.read(512)
    assert mbr[510:512] == b"\x55\xaa", "no MBR signature"
    out = []
    for i in range(4):
        e = mbr[446 + 16 * i:462 + 16 * i]
        first, count = struct.unpack("<II", e[8:16])
        if e[4]:
            out.append((e[0] == 0x80, e[4], first, count))
    return out


def debugfs(disk: Path, offset: int, request: str) -> str:
    r = subprocess.run(["debugfs", "-R", request, f"{disk}?offset={offset}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def check_disk_offline(disk: Path, toplevel: str, tmp: Path) -> None:
    parts = partitions(disk)
    assert [(p[0], p[1]) for p in parts] == [(False, 0xEF), (True, 0x83)], parts
    esp, root = parts
    assert esp[2] == 2048 and root[2] >= esp[2] + esp[3]
    assert (root[2] + root[3]) * 512 <= disk.stat().st_size
    with open(disk, "rb") as f:
        boot_code = f.read(440)
        f.seek(esp[2] * 512)
        esp_bytes = f.read(esp[3] * 512)
    # BIOS: SYSLINUX's MBR code, which boots the active partition's extlinux
    assert boot_code == SYSLINUX_MBR.read_bytes()[:440]
    # UEFI: a FAT ESP holding GRUB at the removable-media path
    assert b"FAT" in esp_bytes[:90] and b"NIXIE-ESP" in esp_bytes[:90]
    assert b"BOOTX64 EFI" in esp_bytes and b"GNU GRUB" in esp_bytes
    off = root[2] * 512
    assert "Filesystem volume name:   nixie-root" in debugfs(disk, off, "stats")
    assert "ldlinux.sys" in debugfs(disk, off, "ls -l /boot/extlinux")
    conf = debugfs(disk, off, "cat /boot/extlinux/extlinux.conf")
    assert f"init={toplevel}/init" in conf and "root=/dev/vda2" in conf, conf
    assert f"init={toplevel}/init" in debugfs(disk, off, "cat /boot/nixie/grub.cfg")
    # the root filesystem's /nix, read out of the image
    out = tmp / f"offline-{disk.stem}"
    out.mkdir()
    debugfs(disk, off, f"rdump -p /nix {out}")
    closure = subprocess.run(["nix-store", "-qR", toplevel], capture_output=True, text=True,
                             check=True).stdout.split()
    on_disk = {p.name for p in (out / "nix" / "store").iterdir()}
    assert {Path(p).name for p in closure} <= on_disk, sorted(on_disk)
    assert os.readlink(out / "nix" / "var" / "nix" / "profiles" / "system-1-link") == toplevel
    registration = (out / "nix" / ".nixie" / "registration").read_text()
    assert toplevel in registration
    assert (out / "nix" / ".nixie" / "agent-token").stat().st_mode & 0o077 == 0
    # the real nix loads the registration into the disk's store and checks every path's
    # content against the hash the registration gives
    env = {**os.environ, "NIX_CONFIG": NIX_EXTRA}
    store = f"local?root={out}"
    subprocess.run(["nix-store", "--store", store, "--load-db"], input=registration, text=True,
                   env=env, check=True, capture_output=True)
    r = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "store", "verify",
                        "--store", store, "--no-trust", "-r", toplevel],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["nix-store", "--store", store, "-qR", toplevel], env=env,
                       capture_output=True, text=True, check=True)
    assert sorted(r.stdout.split()) == sorted(closure)


def stateless_run(lan, tmp: Path, flake: Path, names: list[str], disks: dict[str, Path],
                  vms: dict[str, PxeVM], tag: str) -> tuple[int, str]:
    """`nixie serve --hosts hosts.json --flake REF` (stateless mode, state kept in
    tmp/state) next to the LAN's own DHCP server (dnsmasq; ours answers proxy-DHCP),
    listing `names` in install mode, with their VMs powered on: (exit code, log).
    The VMs are left running in `vms`."""
    hosts_json = tmp / f"hosts-{tag}.json"
    hosts_json.write_text(json.dumps({n: {"mac_address": MACHINES[n][0], "mode": "install"}
                                      for n in names}))
    cfg_path = tmp / "stateless.json"
    cfg_path.write_text(json.dumps(vm_config(tmp / "unused")))
    log = tmp / f"stateless-{tag}.log"
    with OtherDhcpServer(lan, tmp, ("10.77.0.150", "10.77.0.199")):
        serve = start_serve(lan, cfg_path, log, "--hosts", str(hosts_json), "--flake", str(flake),
                            "--timeout", str(TIMEOUT), "--state-dir", str(tmp / "state"))
        try:
            assert wait_port(lan, "10.77.0.1", 8081), log.read_text()
            for name in names:
                mac, fw = MACHINES[name]
                vms[name] = PxeVM(lan, "br-lan", fw, mac, tmp / f"vms-{tag}", memory_mb=512,
                                  disk=disks[name]).start()
            rc = serve.wait(TIMEOUT + 120)
        finally:
            stop_processes([serve], timeout=10)
    return rc, log.read_text()


@pytest.mark.timeout(1500)  # three power-ons per VM under TCG, two VMs sharing two cores
def test_bios_and_uefi_install_to_disk_then_boot_from_it(tmp_path):
    tmp = tmp_path
    flake = labflake.materialise(tmp / "flake", release=f"install {uuid.uuid4()}")
    disks = {name: tmp / f"disk-{name}.img" for name in MACHINES}
    create_disk(disks["demo"], SMALL_DISK_MIB)
    create_disk(disks["demo2"], DISK_MIB)
    vms: dict[str, PxeVM] = {}
    cfg_path = tmp / "config.json"
    with router_namespace() as ns:
        try:
            # stateless install of the BIOS host onto a disk too small for its system:
            # the installer says so, the host is failed, and the run exits 1 with the reason
            rc, out = stateless_run(ns, tmp, flake, ["demo"], disks, vms, "small")
            assert rc == 1, out[-3000:]
            last = out.strip().splitlines()[-1]
            assert last.startswith("nixie: host demo failed: ") and "too small" in last, last
            assert f"{SMALL_DISK_MIB} MiB" in last, last
            assert "NIXIE-INSTALL-FAILED disk /dev/vda is too small" in vms["demo"].console()
            vms.pop("demo").stop()
            # the admin replaces the disk and runs it again (same --state-dir: the failed
            # host is retried) with both hosts: it exits 0 only once each has installed
            # its disk and booted from it
            create_disk(disks["demo"], DISK_MIB)
            rc, out = stateless_run(ns, tmp, flake, list(MACHINES), disks, vms, "retry")
            assert rc == 0, out[-3000:] + consoles(list(vms.values()))
            assert out.strip().splitlines()[-1] == "nixie: all hosts done: demo, demo2"
            for name, vm in vms.items():
                text = vm.console()
                for marker in ("NIXIE-INSTALLER", "NIXIE-INSTALL copy:", "NIXIE-INSTALLED",
                               "NIXIE-STAGE1-LOCAL /dev/vda2", "NIXIE-LOCAL-BOOT",
                               "NIXIE-REPORTED"):
                    assert marker in text, f"{name}: no {marker}\n{text[-3000:]}"
                assert text.index("NIXIE-INSTALLED") < text.index("NIXIE-LOCAL-BOOT")
            # the same state, served by the appliance itself (its own DHCP) from now on
            cfg_path.write_text(json.dumps(vm_config(tmp / "state", MANUAL_BUILDER)))
            with serving(ns, cfg_path, tmp / "serve.log", [("10.77.0.1", 8081)], timeout=30):
                second_power_on(ns, cfg_path, tmp, vms, disks)
        finally:
            for vm in vms.values():
                vm.stop()

    for name, (_mac, fw) in MACHINES.items():
        h = host(cfg_path, name)
        assert (h["state"], h["mode"], h["boot_mode"]) == ("booted", "local", "local"), h
        kinds = [e["kind"] for e in host_events(cfg_path, name)]
        for step in ("host.installing", "host.installed", "boot.local", "host.booted"):
            assert step in kinds, f"{name} ({fw}): no {step} in {sorted(set(kinds))}"
        toplevel = h["generations"][0]["toplevel"]
        check_disk_offline(disks[name], toplevel, tmp)


def second_power_on(ns, cfg_path: Path, tmp: Path, vms: dict[str, PxeVM],
                    disks: dict[str, Path]) -> None:
    """Both installed hosts power on again: they boot from their disks, and since the
    install HTTP boot has served them the boot-from-disk script only, no kernel or
    initrd (the events say so)."""
    before = {name: local_boots(cfg_path, name) for name in MACHINES}
    for name, vm in list(vms.items()):
        vm.stop()
        vms[name] = PxeVM(ns, "br-lan", vm.firmware, vm.mac, tmp / f"vms-again-{name}",
                          memory_mb=512, disk=disks[name]).start()
    assert wait_until(lambda: all(local_boots(cfg_path, n) > before[n] for n in MACHINES),
                      TIMEOUT, list(vms.values())), consoles(list(vms.values()))
    for name, vm in vms.items():
        assert "NIXIE-STAGE1-LOCAL" in vm.console() and "NIXIE-INSTALLER" not in vm.console()
        evs = host_events(cfg_path, name)
        steps = [e["message"] for e in evs if e["kind"] == "host.installing"]
        for word in ("partition:", "format:", "copy:", "boot loader:"):
            assert any(m.startswith(word) for m in steps), steps
        installed_at = max(e["ts"] for e in evs if e["kind"] == "host.installed")
        after = [e for e in evs if e["ts"] > installed_at]
        # after the install: the boot-from-disk script, twice, and no kernel or initrd
        assert not [e for e in after if e["kind"] in ("boot.kernel", "boot.initrd")], after
        scripts = [e["data"]["script"] for e in after if e["kind"] == "boot.script"]
        assert scripts.count("local") >= 2 and set(scripts) == {"local"}, scripts
        assert sum(1 for e in after if e["kind"] == "boot.local") >= 2
