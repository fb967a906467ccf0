"""Which boot answer a PXE client gets: plain functions over (request, host, settings).

- firmware PXE (vendor class `PXEClient...`, option 93 arch) -> an iPXE binary
  in the TFTP root, named by architecture;
- UEFI HTTP Boot (vendor class `HTTPClient...`) -> the same binary as an HTTP
  URL under `{boot_base_url}/ipxe/`, with `HTTPClient` echoed in option 60;
- iPXE itself (user class `iPXE`, or option 175 present) -> the host's HTTP
  boot script `{boot_base_url}/boot/{mac}.ipxe`, which ends the chainload loop;
- MACs with no host record: `unknown_clients` = menu | local get the same
  answers (the HTTP script decides what to show), ignore gets none.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import OPT_IPXE_ENCAP, Packet

# option 93 values (RFC 4578 + IANA registry)
ARCH_BIOS = 0
ARCH_IA32_UEFI = 6
ARCH_X64_UEFI = 7
ARCH_X64_UEFI_ALT = 9  # "EFI BC", sent by x64 UEFI firmwares
ARCH_ARM64_UEFI = 11
ARCH_IA32_UEFI_HTTP = 15
ARCH_X64_UEFI_HTTP = 16
ARCH_ARM64_UEFI_HTTP = 19

BOOT_FILES = {
    ARCH_BIOS: "undionly.kpxe",
    ARCH_IA32_UEFI: "ipxe.efi",
    ARCH_X64_UEFI: "snponly.efi",
    ARCH_X64_UEFI_ALT: "snponly.efi",
    ARCH_ARM64_UEFI: "snponly-arm64.efi",
}
# HTTP Boot architectures name the same firmware family as their PXE twin
HTTP_ARCH_TO_PXE = {ARCH_IA32_UEFI_HTTP: ARCH_IA32_UEFI, ARCH_X64_UEFI_HTTP: ARCH_X64_UEFI,
                    ARCH_ARM64_UEFI_HTTP: ARCH_ARM64_UEFI}

UNKNOWN_CLIENT_CHOICES = ("menu", "local", "ignore")


@dataclass(frozen=True)
class BootSettings:
    """What the policy needs from the configuration."""

    server_ip: str  # the router's LAN address: TFTP server (siaddr, option 66)
    boot_base_url: str  # e.g. http://10.0.0.1:8081
    unknown_clients: str = "menu"


@dataclass(frozen=True)
class BootAnswer:
    """The boot part of a reply."""

    kind: str  # "tftp" | "http" (UEFI HTTP Boot) | "script" (iPXE -> HTTP script)
    filename: str  # file field and option 67
    tftp_server: str | None  # siaddr and option 66 (None: leave siaddr as the server)
    vendor_class: bytes  # option 60 echoed to the client
    arch: int | None


def is_ipxe(req: Packet) -> bool:
    if OPT_IPXE_ENCAP in req.options:
        return True
    return any(c == b"iPXE" for c in req.user_classes)


def is_http_client(req: Packet) -> bool:
    return req.vendor_class.startswith(b"HTTPClient")


def is_pxe_client(req: Packet) -> bool:
    """Anything that asks for boot information: PXE firmware, UEFI HTTP Boot, iPXE."""
    vc = req.vendor_class
    return vc.startswith(b"PXEClient") or vc.startswith(b"HTTPClient") or is_ipxe(req)


def client_arch(req: Packet) -> int | None:
    """Option 93, or the `Arch:NNNNN` field of the vendor class when 93 is absent."""
    arch = req.client_arch
    if arch is not None:
        return arch
    vc = req.vendor_class
    k = vc.find(b":Arch:")
    if k >= 0:
        digits = vc[k + 6 : k + 11]
        if len(digits) == 5 and digits.isdigit():
            return int(digits)
    return None


def boot_file_for_arch(arch: int | None) -> str | None:
    if arch is None:
        return None
    return BOOT_FILES.get(HTTP_ARCH_TO_PXE.get(arch, arch))


def script_url(base_url: str, mac: str) -> str:
    return f"{base_url.rstrip('/')}/boot/{mac.lower()}.ipxe"


def boot_answer(req: Packet, host: object | None, settings: BootSettings) -> BootAnswer | None:
    """The boot answer for `req` from a machine whose host record is `host`
    (None: unknown MAC), or None when it gets no boot information."""
    if not is_pxe_client(req):
        return None
    if host is None and settings.unknown_clients == "ignore":
        return None
    arch = client_arch(req)
    if is_ipxe(req):
        return BootAnswer("script", script_url(settings.boot_base_url, req.mac_str), None,
                          b"PXEClient", arch)
    name = boot_file_for_arch(arch)
    if name is None:
        return None
    if is_http_client(req):
        return BootAnswer("http", f"{settings.boot_base_url.rstrip('/')}/ipxe/{name}", None,
                          b"HTTPClient", arch)
    return BootAnswer("tftp", name, settings.server_ip, b"PXEClient", arch)
