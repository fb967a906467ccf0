"""Boot media (issue 20): a hybrid ISO, a raw USB image or an EFI binary that brings up the
network and chains to the router's boot URL with a media token (`docs/boot-media.md`).

Built offline from packaged binaries, never by compiling iPXE:
- BIOS: syslinux's isolinux loads iPXE's `ipxe.lkrn` with the iPXE script as its initrd
  (lkrn runs a script it is handed that way).
- UEFI: the packaged iPXE (Debian's 2019 build) reads no autoexec.ipxe and no load options
  (both came to iPXE in 2021 and 2023), so the UEFI side is GRUB EFI (`grub-mkstandalone`
  with the GRUB script inside its memdisk): it does DHCP (or the static address) and
  loads `/boot/m/<token>.grub`, the same kernel, initrd and command line as the iPXE path.
Every tool is a Debian package (isolinux, syslinux-common, ipxe, grub-efi-amd64-bin,
xorriso, mtools, dosfstools) and a nixpkgs one (syslinux, ipxe, grub2_efi, xorriso, mtools,
dosfstools), so the same code builds the media on the router image.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sqlite3
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.domain import media
from appliance.errors import InvalidInput, Unavailable

FORMATS = ("iso", "usb", "efi")
ISOLINUX_DIRS = ("/usr/lib/ISOLINUX", "/usr/share/syslinux", "/usr/lib/syslinux")
SYSLINUX_MODULES = ("/usr/lib/syslinux/modules/bios", "/usr/share/syslinux", "/usr/lib/syslinux")
GRUB_MODULES = ("net", "efinet", "http", "linux", "normal", "configfile", "echo", "sleep",
                "test", "true")
USB_SIZE = 16 * 1024 * 1024
USB_OFFSET = 1024 * 1024  # the FAT partition starts at 1 MiB


@dataclass(frozen=True)
class Static:
    """A static address for media used where no DHCP server answers."""

    address: str  # 192.0.2.10/24
    gateway: str | None = None
    dns: str | None = None

    @classmethod
    def parse(cls, address: str | None, gateway: str | None = None,
              dns: str | None = None) -> Static | None:
        if not address:
            for name, value in (("gateway", gateway), ("dns", dns)):
                if value and value.strip():
                    raise InvalidInput(f"a {'DNS server' if name == 'dns' else name} needs a "
                                       "static address (without one the media use DHCP)",
                                       field=name)
            return None
        try:
            iface = ipaddress.IPv4Interface(address.strip())
            gw = str(ipaddress.IPv4Address(gateway.strip())) if gateway else None
            ns = str(ipaddress.IPv4Address(dns.strip())) if dns else None
        except ValueError as e:
            raise InvalidInput(f"static address: {e}", field="address") from None
        if "/" not in address:
            raise InvalidInput("give the address with its prefix, like 192.0.2.10/24",
                               field="address")
        return cls(str(iface), gw, ns)


    def lines(self, address: str, gateway: str, dns: str) -> list[str]:
        """The boot loader's commands for this address, from its templates."""
        iface = ipaddress.IPv4Interface(self.address)
        out = address.format(ip=iface.ip, mask=iface.netmask, net=iface.network).split("\n")
        if self.gateway:
            out.append(gateway.format(gw=self.gateway))
        if self.dns:
            out.append(dns.format(dns=self.dns))
        return out


@dataclass(frozen=True)
class Tools:
    """Where the packaged binaries are (the NixOS module points these at nixpkgs')."""

    ipxe_dir: str = "/usr/lib/ipxe"
    isolinux_dir: str | None = None
    syslinux_modules: str | None = None

    def find(self, name: str, dirs: tuple[str, ...]) -> str:
        """`name` in `dirs`, then in the share/syslinux of the syslinux on PATH (nixpkgs)."""
        on_path = shutil.which("syslinux") or shutil.which("extlinux")
        if on_path:
            dirs = (*dirs, str(Path(on_path).resolve().parent.parent / "share" / "syslinux"))
        for d in dirs:
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
        raise Unavailable(f"{name} not found (install isolinux/syslinux)")

    def ipxe(self, name: str) -> str:
        """A packaged iPXE binary in `ipxe_dir` (tftp.ipxe_dir)."""
        p = os.path.join(self.ipxe_dir, name)
        if not os.path.isfile(p):
            raise Unavailable(f"{p} is missing (install ipxe or set tftp.ipxe_dir)")
        return p


def script_url(base_url: str, token: str, kind: str) -> str:
    """The media's boot URL: token in the path, the MAC the firmware sees in the query."""
    mac = "${net0/mac:hexhyp}" if kind == "ipxe" else "${net_default_mac}"
    return f"{base_url}/boot/m/{token}.{kind}?mac={mac}"


def ipxe_script(base_url: str, token: str, static: Static | None = None) -> str:
    """The iPXE script on BIOS media: network up, then chain; retry on failure."""
    net = static.lines("ifopen net0\nset net0/ip {ip}\nset net0/netmask {mask}",
                       "set net0/gateway {gw}", "set dns {dns}") if static \
        else ["dhcp || goto failed"]
    return "\n".join([
        "#!ipxe",
        "echo Nixie boot media",
        ":start",
        *net,
        f"chain --replace {script_url(base_url, token, 'ipxe')} || goto failed",
        ":failed",
        "echo Nixie: could not reach the router; retrying in 10 seconds",
        "sleep 10",
        "goto start",
        "",
    ])


def grub_script(base_url: str, token: str, static: Static | None = None) -> str:
    """The GRUB script on UEFI media: the same, through GRUB's network stack."""
    base_url = media.validate_base_url(base_url, schemes=("http",))
    host = base_url.split("://", 1)[1].split("/", 1)[0]
    path = "/" + base_url.split("://", 1)[1].split("/", 1)[1] if base_url.count("/") > 2 else ""
    net = static.lines("net_add_addr nixie efinet0 {ip}\nnet_add_route nixie_lan {net} nixie",
                       "net_add_route nixie_default 0.0.0.0/0 gw {gw}", "net_add_dns {dns}") \
        if static else ["net_bootp"]
    url = script_url(base_url, token, "grub").split("/boot/m/", 1)[1]
    return "\n".join([
        "set timeout=0",
        "insmod efinet",
        "insmod http",
        "echo 'Nixie boot media'",
        *net,
        "while true; do",
        f"  configfile (http,{host}){path}/boot/m/{url}",
        "  echo 'Nixie: could not reach the router; retrying in 10 seconds'",
        "  sleep 10",
        "done",
        "",
    ])


def _run(args: list[str]) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise Unavailable(f"{args[0]} is not installed") from None
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace").strip()[-400:]
        raise InvalidInput(f"{args[0]} failed: {err}") from None


def grub_efi(cfg_text: str, out: Path, work: Path) -> None:
    """A standalone GRUB EFI binary whose memdisk holds `cfg_text` as its grub.cfg."""
    cfg = work / "grub.cfg"
    cfg.write_text(cfg_text)
    mods = " ".join(GRUB_MODULES)
    _run(["grub-mkstandalone", "-O", "x86_64-efi", "--compress=no", "--locales=",
          "--fonts=", "--themes=", f"--install-modules={mods}", f"--modules={mods}",
          "-o", str(out), f"boot/grub/grub.cfg={cfg}"])


def _fat_image(path: Path, size: int, files: dict[str, Path], offset: int = 0) -> None:
    """A FAT filesystem at `offset` of `path` (size bytes in all) holding `files`."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(size)
    _run(["mkfs.fat", "-n", "NIXIE", *(["--offset", str(offset // 512)] if offset else []),
          str(path), str((size - offset) // 1024)])
    img = f"{path}@@{offset}" if offset else str(path)
    dirs = sorted({str(Path(d).parent) for d in files} - {"."}, key=len)
    for d in dirs:
        parts = Path(d).parts
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            subprocess.run(["mmd", "-D", "s", "-i", img, f"::/{sub}"], capture_output=True)
    for dest, src in files.items():
        _run(["mcopy", "-i", img, str(src), f"::/{dest}"])


def _mbr(path: Path, start: int, size: int, ptype: int = 0xEF) -> None:
    """One bootable partition of `ptype` (EFI system) in a fresh MBR."""
    lba, count = start // 512, (size - start) // 512
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", lba, count)
    with open(path, "r+b") as f:
        f.seek(446)
        f.write(entry + b"\0" * 48 + b"\x55\xaa")


def build(fmt: str, base_url: str, token: str, out: str | Path, *,
          static: Static | None = None, tools: Tools | None = None) -> Path:
    """Write media of `fmt` (iso | usb | efi) to `out`; returns its path."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="nixie-media-") as tmp:
        work = Path(tmp)
        efi = work / "BOOTX64.EFI"
        grub_efi(grub_script(base_url, token, static), efi, work)
        if fmt == "efi":
            shutil.copyfile(efi, out)
        elif fmt == "usb":
            img = work / "usb.img"
            _fat_image(img, USB_SIZE, {"EFI/BOOT/BOOTX64.EFI": efi}, offset=USB_OFFSET)
            _mbr(img, USB_OFFSET, USB_SIZE)
            shutil.copyfile(img, out)
        else:
            _iso(work, efi, ipxe_script(base_url, token, static), out, tools or Tools())
    return out


def _iso(work: Path, efi: Path, script: str, out: Path, tools: Tools) -> None:
    """Hybrid ISO: isolinux + ipxe.lkrn (BIOS, CD and USB) and an El Torito EFI image."""
    tree = work / "iso"
    (tree / "isolinux").mkdir(parents=True)
    iso_dirs = (tools.isolinux_dir,) if tools.isolinux_dir else ISOLINUX_DIRS
    mod_dirs = (tools.syslinux_modules,) if tools.syslinux_modules else SYSLINUX_MODULES
    shutil.copyfile(tools.find("isolinux.bin", iso_dirs), tree / "isolinux" / "isolinux.bin")
    shutil.copyfile(tools.find("ldlinux.c32", mod_dirs), tree / "isolinux" / "ldlinux.c32")
    shutil.copyfile(tools.ipxe("ipxe.lkrn"), tree / "ipxe.lkrn")
    (tree / "nixie.ipxe").write_text(script)
    (tree / "isolinux" / "isolinux.cfg").write_text(
        "DEFAULT nixie\nPROMPT 0\nTIMEOUT 0\nLABEL nixie\n  KERNEL /ipxe.lkrn\n"
        "  INITRD /nixie.ipxe\n")
    _fat_image(tree / "efiboot.img", 4 * 1024 * 1024 if efi.stat().st_size < 3_500_000
               else 8 * 1024 * 1024, {"EFI/BOOT/BOOTX64.EFI": efi})
    mbr = tools.find("isohdpfx.bin", iso_dirs)
    _run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-V", "NIXIE",
          "-isohybrid-mbr", mbr, "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
          "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
          "-eltorito-alt-boot", "-e", "efiboot.img", "-no-emul-boot",
          "-isohybrid-gpt-basdat", str(tree)])


def media_urls(cfg) -> dict[str, str]:
    """The boot URLs media can carry: `lan` (boot_base_url), `vpn` (the router's tunnel
    address, when the VPN is on), `public` (boot.media_url, when set)."""
    urls = {"lan": cfg.boot_base_url}
    port = urlsplit(cfg.boot_base_url).port or 8081
    if cfg.vpn.enable:
        urls["vpn"] = f"http://{ipaddress.IPv4Interface(cfg.vpn.address).ip}:{port}"
    if cfg.boot.media_url:
        urls["public"] = cfg.boot.media_url.rstrip("/")
    return urls


def create_media(conn: sqlite3.Connection, cfg, *, host: str | None, fmt: str, out: str | Path,
                 url: str = "lan", static: Static | None = None, label: str = ""
                 ) -> dict[str, Any]:
    """A new media token and the media file carrying it, written to `out`: what the UI, the
    API and `nixie media` all call. A failed build leaves no token behind."""
    urls = media_urls(cfg)
    if url not in urls:
        raise InvalidInput(f"boot URL must be one of {', '.join(urls)} (vpn needs vpn.enable, "
                           "public needs boot.media_url)", field="url")
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    base_url = media.validate_base_url(urls[url], "url", schemes=("http",))  # GRUB: no TLS
    row, token = media.create_token(conn, host=host, base_url=base_url, fmt=fmt, label=label)
    try:
        build(fmt, row["base_url"], token, out, static=static,
              tools=Tools(ipxe_dir=cfg.tftp.ipxe_dir))
    except BaseException:
        media.delete_token(conn, row["id"])
        raise
    return row


def filename(row: dict[str, Any]) -> str:
    ext = {"iso": "iso", "usb": "img", "efi": "efi"}[row["format"]]
    return f"nixie-{row['host'] or 'generic'}-{row['id']}.{ext}"


def shell_one_liner(cfg) -> str:
    """What to type at an iPXE shell (Ctrl-B) on the LAN: the router's script for the
    MAC iPXE sees (an unknown MAC lands under Machines waiting)."""
    return f"dhcp && chain {cfg.boot_base_url}/boot/${{mac}}.ipxe"
