"""`python -m lab up --install` (`make run INSTALL=1`): the lab's hosts in mode install,
each VM with a fresh empty disk. What it sets up, short of starting QEMU: the parsed
arguments, the machines (disk images), and the hosts it binds in a real database. The
install itself, with the same PxeVM and disks, is tests/vm/test_install_disk.py."""

from __future__ import annotations

import pytest

from appliance.domain import builds, hosts
from appliance.state.db import Store
from lab import __main__ as labmain
from lab import vms
from lab.qemu import create_disk, disk_format

pytestmark = pytest.mark.unit


def test_install_flag_parses_and_needs_the_vms(capsys):
    assert labmain.parse(["up", "--install"]).install is True
    assert labmain.parse(["up"]).install is False
    with pytest.raises(SystemExit) as e:
        labmain.parse(["up", "--install", "--no-vm"])
    assert e.value.code == 2
    assert "--install needs the VMs" in capsys.readouterr().err


def test_install_machines_get_disks_and_install_mode(tmp_path):
    plain = vms.machines(tmp_path, install=False)
    assert [(m.name, m.firmware, m.mode, m.disk) for m in plain] == [
        ("demo", "bios", "netboot", None), ("demo2", "uefi", "netboot", None)]
    todo = vms.machines(tmp_path, install=True)
    assert [(m.name, m.firmware, m.mode) for m in todo] == [
        ("demo", "bios", "install"), ("demo2", "uefi", "install")]
    assert [m.disk for m in todo] == [tmp_path / "disks" / "demo.img",
                                      tmp_path / "disks" / "demo2.img"]
    # what start() makes of each: an empty sparse raw image of DISK_MIB
    disk = create_disk(todo[0].disk, vms.DISK_MIB)
    assert disk.stat().st_size == vms.DISK_MIB << 20 and disk_format(disk) == "raw"
    assert disk.stat().st_blocks * 512 < 1 << 20


def test_bind_hosts_puts_existing_lab_hosts_in_install_mode(tmp_path):
    store = Store(tmp_path / "nixie.db")
    vms.bind_hosts(store, "path:/lab/flake", vms.machines(tmp_path, install=False))
    conn = store.conn()
    assert {hosts.get_host(conn, n)["mode"] for n in vms.LAB_HOSTS} == {"netboot"}
    # the next `lab up --install` on the same lab state: the same hosts, now to install
    vms.bind_hosts(store, "path:/lab/flake", vms.machines(tmp_path, install=True))
    for name, (mac, _fw) in vms.LAB_HOSTS.items():
        h = hosts.get_host(conn, name)
        assert (h["mode"], h["macs"], h["flake"]) == ("install", [mac], "path:/lab/flake")
        assert builds.list_builds(conn, host_name=name, limit=1)[0]["status"] == "queued"
