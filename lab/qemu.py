"""Virtual machines that PXE-boot for real: QEMU with iPXE ROMs (BIOS) or OVMF (UEFI).

Used by the lab (`python -m lab up`) and the vm-tier tests. A VM's tap device is
attached to a bridge inside a network namespace; its serial console goes to a
file. BIOS: SeaBIOS runs the NIC's iPXE ROM (ipxe-qemu). UEFI: OVMF with an
empty `romfile=` uses EDK2's own PXE client, which fetches snponly.efi over
TFTP. UEFI HTTP Boot (`netboot="http"`): OVMF's PXEv4/PXEv6 boot options are
turned off through its fw_cfg knobs (`opt/org.tianocore/IPv4PXESupport`,
`IPv6PXESupport`), so the NIC's first boot option is "UEFI HTTPv4" with an empty
URI: the firmware asks DHCP as `HTTPClient` and boots the URL it is given. IPv6
PXE (`netboot="pxe6"`): only the PXEv4 option is turned off, so "UEFI PXEv6"
comes first (DHCPv6, then the boot file over TFTP/IPv6). KVM
guests fail on these machines, so `-accel tcg`.

A VM may have a virtio disk (`disk=`, made by `create_disk`: a sparse raw file,
easy to read offline). Its boot order is then the network first, the disk
second (`bootindex` 1 and 2), as on a machine that installs itself: the router
decides each power-on whether the host netboots or goes on to its disk. With a
disk the VM reboots in place (no `-no-reboot`), so an installer's reboot lands
on the firmware again.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.netns import Netns, unique

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
NETBOOTS = ("pxe", "http", "pxe6")


def create_disk(path: Path, size_mib: int, fmt: str = "raw") -> Path:
    """An empty sparse disk image (`qemu-img create`); raw unless `fmt` says qcow2."""
    if fmt not in ("raw", "qcow2"):
        raise ValueError("disk format must be raw or qcow2")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), f"{int(size_mib)}M"],
                   check=True, capture_output=True, text=True)
    return path


def disk_format(path: Path) -> str:
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def media_argv(media: Path) -> list[str]:
    """Boot media first in the boot order: an `.iso` as a CD-ROM, anything else as a USB
    stick (xHCI usb-storage), read-only."""
    if media.suffix == ".iso":
        return ["-drive", f"file={media},format=raw,if=none,id=m0,media=cdrom,readonly=on",
                "-device", "ide-cd,drive=m0,bootindex=0"]
    return ["-device", "qemu-xhci,id=xhci",
            "-drive", f"file={media},format=raw,if=none,id=m0,readonly=on",
            "-device", "usb-storage,bus=xhci.0,drive=m0,bootindex=0"]


def qemu_argv(*, firmware: str, mac: str, tap: str, serial: Path, workdir: Path,
              memory_mb: int = 768, accel: str = "tcg", netboot: str = "pxe",
              disk: Path | None = None, media: Path | None = None) -> list[str]:
    """`media`: the machine boots that (`media_argv`) and its NIC has no PXE at all: no
    option ROM, and on UEFI the firmware's PXE boot options are off."""
    if firmware not in ("bios", "uefi"):
        raise ValueError("firmware must be bios or uefi")
    if netboot not in NETBOOTS or (netboot != "pxe" and firmware != "uefi"):
        raise ValueError("netboot must be pxe, or http or pxe6 with uefi firmware")
    argv = ["qemu-system-x86_64", "-accel", accel, "-m", str(memory_mb), "-smp", "1",
            "-display", "none", "-monitor", "none",
            *(["-no-reboot"] if disk is None else []), "-serial", f"file:{serial}",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    if disk is not None:  # second in the boot order, after the network
        argv += ["-drive", f"file={disk},format={disk_format(disk)},if=none,id=d0,cache=unsafe",
                 "-device", "virtio-blk-pci,drive=d0,bootindex=2"]
    if media is not None:
        argv += media_argv(media)
    if firmware == "bios":
        rom = ",romfile=" if media is not None else ""
        argv += ["-device", f"virtio-net-pci,netdev=n0,mac={mac}{rom},bootindex=1"]
        if disk is None and media is None:
            argv += ["-boot", "n"]
    else:
        vars_copy = workdir / f"OVMF_VARS-{mac.replace(':', '')}.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
                 "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"]
        if netboot == "http" or media is not None:  # no PXE boot options
            argv += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                     "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
        elif netboot == "pxe6":  # no PXEv4 boot option: PXEv6 comes first
            argv += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]
        elif disk is not None:
            # when iPXE exits to boot the disk, OVMF would try PXE over IPv6 first (the lab
            # LAN has no DHCPv6 boot server: a long timeout) before the disk's entry
            argv += ["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
    return argv


@dataclass
class PxeVM:
    """One PXE-booting VM on `bridge` inside `ns`. Use as a context manager or
    call stop(); the tap device and the QEMU process are always removed."""

    ns: Netns
    bridge: str
    firmware: str
    mac: str
    workdir: Path
    memory_mb: int = 768
    netboot: str = "pxe"
    disk: Path | None = None
    media: Path | None = None  # boot this ISO / USB image, no PXE (`qemu_argv`)
    tap: str = field(default_factory=lambda: unique("t"))
    proc: subprocess.Popen | None = None

    @property
    def serial(self) -> Path:
        return self.workdir / f"serial-{self.firmware}-{self.mac.replace(':', '')}.log"

    def start(self) -> PxeVM:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial.unlink(missing_ok=True)
        self.ns.run("ip", "tuntap", "add", "dev", self.tap, "mode", "tap")
        self.ns.run("ip", "link", "set", self.tap, "master", self.bridge)
        self.ns.run("ip", "link", "set", self.tap, "up")
        argv = qemu_argv(firmware=self.firmware, mac=self.mac, tap=self.tap, serial=self.serial,
                         workdir=self.workdir, memory_mb=self.memory_mb, netboot=self.netboot,
                         disk=self.disk, media=self.media)
        err = open(self.workdir / f"qemu-{self.firmware}-{self.mac.replace(':', '')}.err", "w")
        self.proc = self.ns.popen(*argv, stdout=subprocess.DEVNULL, stderr=err)
        return self

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_for(self, *markers: str, timeout: float = 300) -> str | None:
        """Wait until the console shows one of `markers`; returns it, or None on
        timeout or if QEMU exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console()
            for m in markers:
                if m in text:
                    return m
            if self.proc is not None and self.proc.poll() is not None:
                return None
            time.sleep(0.5)
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.ns.run("ip", "link", "del", self.tap, check=False)

    def __enter__(self) -> PxeVM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
