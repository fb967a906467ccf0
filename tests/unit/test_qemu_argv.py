"""The QEMU command lines the lab and the vm tests start (no VM is run here)."""

from __future__ import annotations

import pytest

from lab.qemu import create_disk, qemu_argv

PXE_OFF = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
           "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]


def argv(tmp_path, **kw) -> list[str]:
    return qemu_argv(mac="52:54:00:00:00:01", tap="t0", serial=tmp_path / "s.log",
                     workdir=tmp_path, **kw)


def test_uefi_http_boot_turns_off_ovmf_pxe_options_only(tmp_path):
    http = argv(tmp_path, firmware="uefi", netboot="http")
    pxe = argv(tmp_path, firmware="uefi")
    assert http == pxe + PXE_OFF
    assert "romfile=" in " ".join(http)  # OVMF's own network stack, not the iPXE ROM
    assert (tmp_path / "OVMF_VARS-525400000001.fd").stat().st_size > 0
    assert "-fw_cfg" not in argv(tmp_path, firmware="bios")


@pytest.mark.parametrize(("firmware", "netboot"), [("bios", "http"), ("uefi", "tftp"),
                                                   ("efi", "pxe")])
def test_bad_firmware_or_netboot_is_refused(tmp_path, firmware, netboot):
    with pytest.raises(ValueError):
        argv(tmp_path, firmware=firmware, netboot=netboot)


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_disk_boots_after_the_network_and_the_vm_may_reboot(tmp_path, firmware):
    disk = create_disk(tmp_path / "d.img", 64)
    assert disk.stat().st_size == 64 << 20 and disk.stat().st_blocks * 512 < 1 << 20  # sparse raw
    with_disk = argv(tmp_path, firmware=firmware, disk=disk)
    assert "-no-reboot" in argv(tmp_path, firmware=firmware) and "-no-reboot" not in with_disk
    joined = " ".join(with_disk)
    assert f"file={disk},format=raw" in joined and "virtio-blk-pci,drive=d0,bootindex=2" in joined
    assert ",bootindex=1" in joined and "-boot" not in with_disk
    assert "format=qcow2" in " ".join(argv(tmp_path, firmware=firmware,
                                           disk=create_disk(tmp_path / "q.img", 64, "qcow2")))


def test_uefi_with_a_disk_skips_pxe_over_ipv6_on_its_way_to_the_disk(tmp_path):
    """After iPXE's `exit 1` (the router's boot-from-disk answer) OVMF goes down its boot
    options; PXE over IPv6 would wait out its timeouts before the disk's turn."""
    v6_off = ["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
    disk = create_disk(tmp_path / "d.img", 64)
    joined = " ".join(argv(tmp_path, firmware="uefi", disk=disk))
    assert " ".join(v6_off) in joined and "IPv4PXESupport" not in joined
    assert "-fw_cfg" not in argv(tmp_path, firmware="uefi")
    assert "-fw_cfg" not in argv(tmp_path, firmware="bios", disk=disk)
