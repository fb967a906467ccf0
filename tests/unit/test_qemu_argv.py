"""The QEMU command lines the lab and the vm tests start (no VM is run here)."""

from __future__ import annotations

import pytest

from lab.qemu import qemu_argv

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
