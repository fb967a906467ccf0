"""Boot now through a real IPMI BMC: `ipmi_sim` (OpenIPMI) on the router's LAN namespace,
whose chassis control (tests/bmc_chassis.py) powers a QEMU VM: power on starts it, booting
from the network only when the boot device was set to PXE (else from a disk it does not
have), and the override is used up by that boot, as on a real BMC.

`nixie power demo boot` sets the next boot to PXE and powers on over IPMI (RMCP+); the VM
PXE-boots from our DHCP/TFTP/HTTP boot and reports `booted`. `nixie power demo off` stops
it (the QEMU process is gone; ipmitool, the reference client, says off). Then the machine is
powered on and off behind the router's back (ipmitool), and `nixie serve`'s power poll
(bmc.poll_seconds: 2) follows: the stored power state and a `host.power_state` event each
time.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from lab import flake as labflake
from lab.netns import unique
from lab.qemu import qemu_argv
from tests.bmc_lab import IpmiSim
from tests.conftest import ROOT, run_nixie
from tests.vm.pxe_lab import add_and_build, appliance_serving, wait_booted

MAC = "52:54:00:4e:58:51"
BOOT_TIMEOUT = 420


def vm_pid(chassis) -> int | None:
    p = chassis / "qemu.pid"
    if not p.exists():
        return None
    pid = int(p.read_text())
    stat = f"/proc/{pid}/stat"
    if not os.path.exists(stat) or open(stat).read().split(")")[-1].split()[0] == "Z":
        return None
    return pid


def wait_power(cfg_path, ns, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rec = json.loads(run_nixie("host", "bmc", "demo", "--json", config=cfg_path, ns=ns).stdout)
        if rec["power_state"] == state or time.monotonic() > deadline:
            return rec
        time.sleep(1)


def test_boot_now_through_ipmi_bmc_boots_the_vm_and_power_follows(tmp_path):
    with appliance_serving(tmp_path, sections={"bmc": {"poll_seconds": 2}}) as (ns, cfg_path, _):
        flake = labflake.materialise(tmp_path / "flake", release=f"bmc {uuid.uuid4()}")
        add_and_build(cfg_path, flake, {"demo": MAC})

        tap = unique("t")
        ns.run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
        ns.run("ip", "link", "set", tap, "master", "br-lan")
        ns.run("ip", "link", "set", tap, "up")
        serial = tmp_path / "serial.log"
        pxe = qemu_argv(firmware="bios", mac=MAC, tap=tap, serial=serial, workdir=tmp_path,
                        memory_mb=256)
        disk = [a.replace(",bootindex=1", ",romfile=") for a in pxe]
        disk[disk.index("-boot") + 1] = "c"
        chassis = tmp_path / "chassis"
        chassis.mkdir()
        (chassis / "vm.json").write_text(json.dumps(
            {"pxe": pxe, "disk": disk, "log": str(tmp_path / "qemu.log")}))
        prog = f"{sys.executable} {ROOT / 'tests' / 'bmc_chassis.py'} {chassis}"
        with IpmiSim(ns, tmp_path / "sim", chassis=prog) as sim:
            try:
                r = run_nixie("host", "bmc", "demo", "--kind", "ipmi", "--address", "127.0.0.1",
                              "--user", sim.user, "--password-stdin", config=cfg_path,
                              input=sim.password + "\n")
                assert r.returncode == 0, r.stderr
                r = run_nixie("power", "demo", "boot", "--json", config=cfg_path, ns=ns)
                assert r.returncode == 0, r.stderr
                out = json.loads(r.stdout)
                assert (out["via"], out["action"]) == ("bmc", "on"), out
                assert "started qemu booting pxe" in (chassis / "log").read_text()
                states = wait_booted(cfg_path, ["demo"], BOOT_TIMEOUT,
                                     give_up=lambda: vm_pid(chassis) is None)
                console = serial.read_text(errors="replace") if serial.exists() else ""
                assert states["demo"]["state"] == "booted", console[-2500:]
                assert "NIXIE-STAGE2" in console

                r = run_nixie("power", "demo", "off", config=cfg_path, ns=ns)
                assert r.returncode == 0, r.stderr
                assert vm_pid(chassis) is None
                assert sim.ipmitool("power", "status").stdout.strip() == "Chassis Power is off"
                assert wait_power(cfg_path, ns, "off")["power_state"] == "off"

                # behind the router's back: the poll notices both changes
                assert sim.ipmitool("power", "on").returncode == 0
                assert wait_power(cfg_path, ns, "on")["power_state"] == "on"
                assert "booting disk" in (chassis / "log").read_text().splitlines()[-1] \
                    or "started qemu booting disk" in (chassis / "log").read_text()
                assert sim.ipmitool("power", "off").returncode == 0
                assert wait_power(cfg_path, ns, "off")["power_state"] == "off"
                changes = [e["data"]["power_state"] for e in json.loads(run_nixie(
                    "events", "--host", "demo", "--kind", "host.power_state", "--json",
                    config=cfg_path).stdout)]
                assert changes[:2] == ["off", "on"], changes  # newest first
                kinds = {e["kind"] for e in json.loads(run_nixie(
                    "events", "--host", "demo", "--kind", "host.power*", "--json",
                    config=cfg_path).stdout)}
                assert {"host.power_pxe", "host.power_on", "host.power_off"} <= kinds, kinds
            finally:
                pid = vm_pid(chassis)
                if pid:
                    os.kill(pid, 9)
