"""The lab's machines: the example flake, two hosts bound to it, and a BIOS and
a UEFI virtual machine that PXE-boot from the appliance (`python -m lab up`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from appliance.domain import builds, flakes, hosts
from appliance.errors import Conflict
from appliance.state.db import Store
from lab.flake import materialise
from lab.netns import Netns
from lab.qemu import PxeVM

LAB_HOSTS = {
    "demo": ("52:54:00:4e:58:01", "bios"),
    "demo2": ("52:54:00:4e:58:02", "uefi"),
}


def prepare_flake(lab_dir: Path) -> str:
    flake = lab_dir / "flake"
    if not (flake / "flake.nix").exists():
        materialise(flake)
    return str(flake)


def bind_hosts(store: Store, flake: str) -> None:
    conn = store.conn()
    try:
        flakes.add_flake(conn, flake)
    except Conflict:
        pass
    for name, (mac, _fw) in LAB_HOSTS.items():
        try:
            hosts.add_host(conn, name, [mac], flake)
        except Conflict:
            pass
        builds.enqueue(conn, name)


def start(ns: Netns, lab_dir: Path, cfg_path: Path, procs: list) -> str:
    """Called by `python -m lab up` once the appliance runs; returns lines to print."""
    import json

    if not shutil.which("qemu-system-x86_64"):
        return "  VMs:       not started (qemu-system-x86_64 is missing)\n"
    cfg = json.loads(cfg_path.read_text())
    store = Store(Path(cfg["state_dir"]) / "nixie.db")
    flake = prepare_flake(lab_dir)
    bind_hosts(store, flake)
    lines = [f"  flake:     {flake} (hosts {', '.join(LAB_HOSTS)}; builds queued)"]
    for name, (mac, firmware) in LAB_HOSTS.items():
        vm = PxeVM(ns, "br-lan", firmware, mac, lab_dir / "vms").start()
        procs.append(vm.proc)
        lines.append(f"  VM {name:<6} {firmware.upper():<4} {mac}, console: {vm.serial}")
    lines.append("  Watch them go from booting to booted on the dashboard, or:")
    lines.append(f"    ip netns exec {ns.name} .venv/bin/nixie --config {cfg_path} host list")
    return "\n".join(lines) + "\n"
