"""Which boot answer a DHCPv6 client gets (OPTION_BOOTFILE_URL, 59): the IPv6
twin of `netservices/dhcp/policy.py`, with the same files per architecture.

- iPXE (user class `iPXE`) -> the host's HTTP boot script
  `{boot_base_url}/boot/{mac}.ipxe`, which ends the chainload loop;
- UEFI HTTP Boot (vendor class `HTTPClient...`, arch 16) ->
  `{boot_base_url}/ipxe/<file>`, with `HTTPClient` echoed in the vendor class;
- UEFI IPv6 PXE (arch 7 or 9, ...) -> `tftp://[server]/<file>`;
- MACs with no host record: `unknown_clients` = ignore gets no answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from netservices.dhcp.policy import boot_file_for_arch, script_url

from .codec import Message


@dataclass(frozen=True)
class Boot6Settings:
    tftp_server: str  # the router's IPv6 address in tftp:// URLs; "": no TFTP over IPv6
    boot_base_url: str  # http://[addr]:port, reachable over IPv6; "": no HTTP over IPv6
    unknown_clients: str = "menu"


@dataclass(frozen=True)
class Boot6Answer:
    kind: str  # tftp | http | script
    url: str
    http_client: bool  # echo vendor class HTTPClient
    arch: int | None


def is_ipxe(msg: Message) -> bool:
    return any(c == b"iPXE" for c in msg.user_classes)


def is_http_client(msg: Message) -> bool:
    return any(c.startswith(b"HTTPClient") for c in msg.vendor_classes)


_BOOT_OPTIONS = frozenset((61, 15, 16))  # client arch, user class, vendor class


def wants_boot(msg: Message) -> bool:
    """Cheap test first: most messages carry none of the boot options."""
    return msg.has_any(_BOOT_OPTIONS)


def boot_answer6(msg: Message, mac: str | None, host: object | None,
                 settings: Boot6Settings) -> Boot6Answer | None:
    if not wants_boot(msg):
        return None
    if host is None and settings.unknown_clients == "ignore":
        return None
    arches = msg.client_arches
    arch = arches[0] if arches else None
    base = settings.boot_base_url
    if is_ipxe(msg):
        if mac is None or not base:
            return None  # no MAC, no host script
        return Boot6Answer("script", script_url(settings.boot_base_url, mac), False, arch)
    name = boot_file_for_arch(arch)
    if name is None:
        return None
    if is_http_client(msg):
        if not base:
            return None
        return Boot6Answer("http", f"{base.rstrip('/')}/ipxe/{name}", True, arch)
    if not settings.tftp_server:
        return None
    return Boot6Answer("tftp", f"tftp://[{settings.tftp_server}]/{name}", False, arch)
