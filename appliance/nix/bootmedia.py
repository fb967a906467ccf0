"""Boot media (issue 20): a hybrid ISO, a raw USB image or an EFI binary that brings up the
network and chains to the router's boot URL with a media token (`docs/boot-media.md`).

The URL and the token are written once per medium, in one iPXE script (`media_script`,
nixie.ipxe) that both loaders read:
- BIOS: syslinux's isolinux loads iPXE's `ipxe.lkrn` with the script as its initrd.
- UEFI: the packaged iPXE (Debian's 2019 build) reads no autoexec.ipxe and no load options,
  so the UEFI side is GRUB EFI (`grub-mkstandalone`); its config (`GRUB_CFG`, the same on
  every medium, nothing host-specific) defines the script's iPXE commands as GRUB
  functions and sources it; its `chain` loads the router's `/boot/m/<token>.grub`.
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
                "test", "true", "regexp", "search", "search_fs_file", "iso9660", "fat",
                "part_msdos", "part_gpt")
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


SCRIPT = "nixie.ipxe"  # the one file holding the router's URL and the token
# GRUB's `set` is a builtin (a function cannot replace it) and takes only `name=value`: the
# static lines call `${grub}set`, which iPXE reads as `set` (an unset setting expands to
# nothing) and GRUB as its function `grub_set` (its config sets `grub=grub_`)
STATIC_LINES = ("ifopen net0\n${{grub}}set net0/ip {ip}\n${{grub}}set net0/netmask {mask}",
                "${{grub}}set net0/gateway {gw}", "${{grub}}set dns {dns}")


def media_script(base_url: str, token: str, static: Static | None = None) -> str:
    """The media's script, the only place its URL and token are written: iPXE runs it on
    BIOS (ipxe.lkrn's initrd); GRUB sources it on UEFI, with `dhcp`, `ifopen`, `chain` and
    `grub_set` defined as GRUB functions (`GRUB_CFG`). So it keeps to what both parse:
    plain commands, no `||`, labels or `goto` (GRUB cannot parse those), and `${mac}`
    (GRUB cannot parse `${net0/mac:hexhyp}`; the router reads either form)."""
    base_url = media.validate_base_url(base_url, schemes=("http",))  # GRUB: no TLS
    net = static.lines(*STATIC_LINES) if static else ["dhcp"]
    return "\n".join([
        "#!ipxe",
        "# Nixie boot media: iPXE runs this on BIOS, GRUB reads it on UEFI (docs/boot-media.md)",
        "echo Nixie boot media: network, then the router",
        *net,
        f"chain {base_url}/boot/m/{token}.ipxe?mac=${{mac}}",
        "",
    ])


def _netmask_table() -> str:
    masks = (str(ipaddress.IPv4Network(f"0.0.0.0/{p}").netmask) + f"/{p}" for p in range(33))
    return " ".join(masks)


# GRUB's embedded config on every UEFI medium: no URL, no token, nothing host-specific.
# It finds the medium's nixie.ipxe (in its memdisk: the EFI binary; else the ISO or the USB
# stick's FAT), defines the iPXE commands that script uses, and sources it; `chain` turns
# the iPXE URL into the router's `.grub` one. On failure it says so and tries again.
GRUB_CFG = """\
set timeout=0
insmod efinet
insmod http
set grub=grub_
set nixie_up=

function dhcp {
  if [ -z "$nixie_up" ]; then
    echo 'Nixie: DHCP'
    if net_bootp; then nixie_up=1; fi
  fi
  set mac="$net_default_mac"
}

function ifopen {
  true
}

function grub_set {
  if [ "$1" = net0/ip ]; then nixie_ip="$2"; fi
  if [ "$1" = net0/netmask -a -z "$nixie_up" ]; then
    for m in @MASKS@; do
      if regexp --set=1:nixie_prefix "^$2/([0-9]+)\\$" "$m"; then true; fi
    done
    net_add_addr nixie efinet0 "$nixie_ip"
    net_add_route nixie_lan "$nixie_ip/$nixie_prefix" nixie
    set net_default_interface=nixie
    set mac="$net_nixie_mac"
    nixie_up=1
  fi
  if [ "$1" = net0/gateway ]; then net_add_route nixie_default 0.0.0.0/0 gw "$2"; fi
  if [ "$1" = dns ]; then net_add_dns "$2"; fi
}

function chain {
  if regexp --set=1:nixie_host --set=2:nixie_path --set=3:nixie_query '^http://([^/]+)(/.*)[.]ipxe(.*)$' "$1"; then
    configfile "(http,$nixie_host)$nixie_path.grub$nixie_query"
    echo "Nixie: could not load the boot script from $nixie_host"
  else
    echo "Nixie: $1 is not an http:// URL GRUB can load"
  fi
}

if [ -f /@SCRIPT@ ]; then
  nixie_script=/@SCRIPT@
elif search --no-floppy --file --set=nixie_dev /@SCRIPT@; then
  nixie_script="($nixie_dev)/@SCRIPT@"
fi
if [ -z "$nixie_script" ]; then
  echo 'Nixie: @SCRIPT@ is not on this medium; rewrite it with nixie media'
  sleep 60
fi
while [ -n "$nixie_script" ]; do
  source "$nixie_script"
  echo 'Nixie: could not reach the router; retrying in 10 seconds'
  sleep 10
done
""".replace("@MASKS@", _netmask_table()).replace("@SCRIPT@", SCRIPT)


def _run(args: list[str]) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise Unavailable(f"{args[0]} is not installed") from None
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace").strip()[-400:]
        raise InvalidInput(f"{args[0]} failed: {err}") from None


def grub_efi(out: Path, work: Path, script: Path | None = None) -> None:
    """A standalone GRUB EFI binary whose memdisk holds `GRUB_CFG` as its grub.cfg, and
    `script` as /nixie.ipxe when given (the EFI binary: one file with everything)."""
    cfg = work / "grub.cfg"
    cfg.write_text(GRUB_CFG)
    mods = " ".join(GRUB_MODULES)
    _run(["grub-mkstandalone", "-O", "x86_64-efi", "--compress=no", "--locales=",
          "--fonts=", "--themes=", f"--install-modules={mods}", f"--modules={mods}",
          "-o", str(out), f"boot/grub/grub.cfg={cfg}",
          *([f"{SCRIPT}={script}"] if script else [])])


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
    """Write media of `fmt` (iso | usb | efi) to `out`; returns its path. Each holds the
    URL and token once, in `media_script`: the ISO and the USB stick as a file next to the
    loaders, the EFI binary in its GRUB memdisk."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="nixie-media-") as tmp:
        work = Path(tmp)
        script = work / SCRIPT
        script.write_text(media_script(base_url, token, static))
        efi = work / "BOOTX64.EFI"
        grub_efi(efi, work, script if fmt == "efi" else None)
        if fmt == "efi":
            shutil.copyfile(efi, out)
        elif fmt == "usb":
            img = work / "usb.img"
            _fat_image(img, USB_SIZE, {"EFI/BOOT/BOOTX64.EFI": efi, SCRIPT: script},
                       offset=USB_OFFSET)
            _mbr(img, USB_OFFSET, USB_SIZE)
            shutil.copyfile(img, out)
        else:
            _iso(work, efi, script, out, tools or Tools())
    return out


def _iso(work: Path, efi: Path, script: Path, out: Path, tools: Tools) -> None:
    """Hybrid ISO: isolinux + ipxe.lkrn with the script as its initrd (BIOS, CD and USB),
    and an El Torito EFI image whose GRUB finds the same script on the ISO (UEFI)."""
    tree = work / "iso"
    (tree / "isolinux").mkdir(parents=True)
    iso_dirs = (tools.isolinux_dir,) if tools.isolinux_dir else ISOLINUX_DIRS
    mod_dirs = (tools.syslinux_modules,) if tools.syslinux_modules else SYSLINUX_MODULES
    shutil.copyfile(tools.find("isolinux.bin", iso_dirs), tree / "isolinux" / "isolinux.bin")
    shutil.copyfile(tools.find("ldlinux.c32", mod_dirs), tree / "isolinux" / "ldlinux.c32")
    shutil.copyfile(tools.ipxe("ipxe.lkrn"), tree / "ipxe.lkrn")
    shutil.copyfile(script, tree / SCRIPT)
    (tree / "isolinux" / "isolinux.cfg").write_text(
        "DEFAULT nixie\nPROMPT 0\nTIMEOUT 0\nLABEL nixie\n  KERNEL /ipxe.lkrn\n"
        f"  INITRD /{SCRIPT}\n")
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
