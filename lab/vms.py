"""The lab's machines: the example flake, two hosts bound to it, and a BIOS and
a UEFI virtual machine that PXE-boot from the appliance (`python -m lab up`).
With `--install` the hosts are in mode install and each VM has a fresh empty disk:
they install their systems to it, reboot, and boot from it (`docs/install.md`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.domain import builds, flakes, hosts
from appliance.errors import Conflict
from appliance.state.db import Store
from lab.flake import materialise
from lab.netns import Netns
from lab.qemu import PxeVM, create_disk

LAB_HOSTS = {
    "demo": ("52:54:00:4e:58:01", "bios"),
    "demo2": ("52:54:00:4e:58:02", "uefi"),
}
DISK_MIB = 256  # the lab system's closure is ~25 MiB; the installer wants room to spare


@dataclass(frozen=True)
class LabMachine:
    name: str
    mac: str
    firmware: str
    disk: Path | None  # set: the machine installs its system to this disk

    @property
    def mode(self) -> str:
        """The host's mode: install with a disk, else netboot."""
        return "install" if self.disk is not None else "netboot"


def machines(lab_dir: Path, install: bool) -> list[LabMachine]:
    """What `lab up` starts: one machine per `LAB_HOSTS` entry; to install, each with
    its disk image under `lab_dir/disks`."""
    return [LabMachine(name, mac, fw, lab_dir / "disks" / f"{name}.img" if install else None)
            for name, (mac, fw) in LAB_HOSTS.items()]


def prepare_flake(lab_dir: Path) -> str:
    flake = lab_dir / "flake"
    if not (flake / "flake.nix").exists():
        materialise(flake)
    return str(flake)


def bind_hosts(store: Store, flake: str, machines: list[LabMachine]) -> None:
    """Each machine's host on `flake`, in the machine's mode, with a build queued."""
    conn = store.conn()
    try:
        flakes.add_flake(conn, flake)
    except Conflict:
        pass
    for m in machines:
        try:
            hosts.add_host(conn, m.name, [m.mac], flake, mode=m.mode)
        except Conflict:
            hosts.update_host(conn, m.name, mode=m.mode)
        builds.enqueue(conn, m.name)


def start(ns: Netns, lab_dir: Path, cfg_path: Path, procs: list, install: bool = False) -> str:
    """Called by `python -m lab up` once the appliance runs; returns lines to print.
    `install`: the hosts in mode install, each VM with a fresh empty disk."""
    if not shutil.which("qemu-system-x86_64"):
        return "  VMs:       not started (qemu-system-x86_64 is missing)\n"
    cfg = json.loads(cfg_path.read_text())
    store = Store(Path(cfg["state_dir"]) / "nixie.db")
    flake = prepare_flake(lab_dir)
    todo = machines(lab_dir, install)
    bind_hosts(store, flake, todo)
    lines = [f"  flake:     {flake} (hosts {', '.join(LAB_HOSTS)}; builds queued)"]
    for m in todo:
        if m.disk is not None:
            create_disk(m.disk, DISK_MIB)
        vm = PxeVM(ns, "br-lan", m.firmware, m.mac, lab_dir / "vms", disk=m.disk).start()
        procs.append(vm.proc)
        disk = f", disk {m.disk} (mode install)" if m.disk else ""
        lines.append(f"  VM {m.name:<6} {m.firmware.upper():<4} {m.mac}, console: {vm.serial}{disk}")
    if install:
        lines.append("  They install to their disks, reboot and boot from them (boot mode local).")
    lines.append("  Watch them go from booting to booted on the dashboard, or:")
    lines.append(f"    ip netns exec {ns.name} .venv/bin/nixie --config {cfg_path} host list")
    return "\n".join(lines) + "\n"
