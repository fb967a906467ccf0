"""The lab's example flake: NixOS-shaped systems built by the real `nix` with
busybox as every builder and a prebuilt Debian kernel, no nixpkgs.

`materialise(dest)` turns the committed template (examples/lab-flake) into a
git repository that is a valid local flake: it copies the host's static
busybox to bbdir/bin/busybox and the lab kernel (scripts/fetch-lab-kernel.sh)
with its virtio modules to kernel/, and the boot loaders an install puts on a
disk to bootloaders/ (`bootloaders`): SYSLINUX's MBR and `extlinux` (with the
glibc it runs on: the lab system is busybox otherwise) for BIOS, and a
standalone GRUB EFI binary for UEFI, made here once with `grub-mkstandalone`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "examples" / "lab-flake"
FETCH_KERNEL = ROOT / "scripts" / "fetch-lab-kernel.sh"
VIRTIO_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                  "virtio_pci", "failover", "net_failover", "virtio_net")
# what an install needs besides: the disk, its filesystems (ext4 is built in)
DISK_MODULES = ("virtio_blk", "fat", "vfat", "nls_cp437", "nls_utf8", "nls_ascii")
HOSTS = ("demo", "demo2")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
EXTLINUX = Path("/usr/bin/extlinux")
GLIBC = (Path("/lib64/ld-linux-x86-64.so.2"), Path("/lib/x86_64-linux-gnu/libc.so.6"))
# GRUB's own config inside the EFI binary: find the installed system's menu on the disk
GRUB_EMBEDDED_CFG = """\
search --no-floppy --file /boot/nixie/grub.cfg --set=root
configfile /boot/nixie/grub.cfg
"""
GRUB_MODULES = ("linux normal ext2 fat part_msdos part_gpt search search_fs_file configfile "
                "echo test serial terminal boot")
_GIT = ["git", "-c", "user.name=nixie-lab", "-c", "user.email=lab@nixie.invalid",
        "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]


def kernel_cache() -> Path:
    """Where the lab kernel lives (fetched once per machine)."""
    out = subprocess.run(["bash", str(FETCH_KERNEL)], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()
    return Path(out[-1])


def _git(repo: Path, *args: str) -> None:
    subprocess.run([*_GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True)


def materialise(dest: str | os.PathLike, *, release: str = "lab release 1",
                busybox: str = "/bin/busybox") -> Path:
    """Write the example flake into `dest` (created) and commit it; returns the path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("flake.nix", "lab.nix"):
        shutil.copyfile(TEMPLATE / name, dest / name)
    (dest / "release.txt").write_text(release + "\n")
    (dest / "bbdir" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, dest / "bbdir" / "bin" / "busybox")
    os.chmod(dest / "bbdir" / "bin" / "busybox", 0o755)
    kc = kernel_cache()
    kdir = dest / "kernel" / "modules"
    kdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kc / "vmlinuz", dest / "kernel" / "bzImage")
    mods = {p.name.removesuffix(".ko"): p for p in (kc / "lib" / "modules").rglob("*.ko")}
    for m in (*VIRTIO_MODULES, *DISK_MODULES):
        if m not in mods:
            raise FileNotFoundError(f"module {m}.ko is not in the lab kernel at {kc}")
        shutil.copyfile(mods[m], kdir / f"{m}.ko")
    bootloaders(dest / "bootloaders")
    if not (dest / ".git").exists():
        subprocess.run([*_GIT, "init", "-q", str(dest)], check=True, capture_output=True)
    commit(dest, "lab flake")
    return dest


def bootloaders(dest: Path) -> Path:
    """The boot loaders an install writes (Debian packages `extlinux`, `syslinux-common`,
    `grub-efi-amd64-bin`): everything offline, nothing per system."""
    missing = [str(p) for p in (SYSLINUX_MBR, EXTLINUX, *GLIBC) if not p.exists()]
    if missing or not shutil.which("grub-mkstandalone"):
        raise FileNotFoundError("the lab's boot loaders need extlinux, syslinux-common and "
                                f"grub-efi-amd64-bin (missing: {missing or 'grub-mkstandalone'})")
    dest.mkdir(parents=True, exist_ok=True)
    for src in (SYSLINUX_MBR, EXTLINUX, *GLIBC):
        shutil.copyfile(src, dest / src.name)
    os.chmod(dest / "extlinux", 0o755)
    os.chmod(dest / GLIBC[0].name, 0o755)
    cfg = dest / "grub-embedded.cfg"
    cfg.write_text(GRUB_EMBEDDED_CFG)
    subprocess.run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(dest / "BOOTX64.EFI"),
                    f"--install-modules={GRUB_MODULES}", "--modules=part_msdos ext2 search_fs_file",
                    "--locales=", "--themes=", "--fonts=", f"boot/grub/grub.cfg={cfg}"],
                   check=True, capture_output=True, text=True)
    return dest


def commit(repo: str | os.PathLike, message: str = "update") -> None:
    repo = Path(repo)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)


def set_release(repo: str | os.PathLike, release: str) -> None:
    """Turn the knob: only the toplevels' store paths change."""
    (Path(repo) / "release.txt").write_text(release + "\n")
    commit(repo, f"release {release}")


def break_flake(repo: str | os.PathLike) -> None:
    """Commit a syntax error so evaluation fails with Nix's own message."""
    p = Path(repo) / "flake.nix"
    p.write_text(p.read_text() + "\n  this is not nix (\n")
    commit(repo, "broken")


def repair_flake(repo: str | os.PathLike) -> None:
    shutil.copyfile(TEMPLATE / "flake.nix", Path(repo) / "flake.nix")
    commit(repo, "repaired")
