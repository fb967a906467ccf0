"""PXE policy: which boot answer each kind of client gets."""

from __future__ import annotations

import pytest

from netservices.dhcp import codec
from netservices.dhcp.policy import BootSettings, boot_answer, client_arch, is_pxe_client
from netservices.dhcp.store import HostEntry
from tests.dhcp_helpers import client_packet

MAC = "52:54:00:AB:CD:EF".lower()
S = BootSettings("10.77.0.1", "http://10.77.0.1:8081", "menu")
HOST = HostEntry(1, "node1")


def req(**opts) -> codec.Packet:
    return codec.parse(client_packet(codec.DISCOVER, MAC, **opts))


def pxe(arch: int) -> codec.Packet:
    return req(opt60=f"PXEClient:Arch:{arch:05d}:UNDI:003016".encode(), opt93=arch.to_bytes(2, "big"))


@pytest.mark.parametrize("arch, name", [(0, "undionly.kpxe"), (7, "snponly.efi"), (9, "snponly.efi"),
                                        (6, "ipxe.efi"), (11, "snponly-arm64.efi")])
def test_firmware_pxe_gets_the_ipxe_binary_over_tftp(arch, name):
    a = boot_answer(pxe(arch), HOST, S)
    assert a is not None and a.kind == "tftp"
    assert a.filename == name and a.tftp_server == "10.77.0.1" and a.arch == arch
    assert a.vendor_class == b"PXEClient"


@pytest.mark.parametrize("arch, name", [(16, "snponly.efi"), (19, "snponly-arm64.efi"), (15, "ipxe.efi")])
def test_uefi_http_boot_gets_a_url_and_the_vendor_class_echoed(arch, name):
    r = req(opt60=f"HTTPClient:Arch:{arch:05d}:UNDI:003016".encode(), opt93=arch.to_bytes(2, "big"))
    a = boot_answer(r, HOST, S)
    assert a.kind == "http" and a.filename == f"http://10.77.0.1:8081/ipxe/{name}"
    assert a.vendor_class == b"HTTPClient" and a.tftp_server is None


@pytest.mark.parametrize("opts", [
    {"opt77": b"iPXE"},  # bare, as iPXE sends it
    {"opt77": b"\x04iPXE"},  # RFC 3004 form
    {"opt175": b"\x13\x01\x01", "opt60": b"PXEClient:Arch:00000:UNDI:002001"},  # iPXE encapsulated options
])
def test_ipxe_gets_the_host_script_which_ends_the_chainload_loop(opts):
    a = boot_answer(req(opt93=b"\x00\x00", **opts), HOST, S)
    assert a.kind == "script"
    assert a.filename == "http://10.77.0.1:8081/boot/52:54:00:ab:cd:ef.ipxe"


def test_ipxe_from_uefi_also_gets_the_script_not_a_binary():
    r = req(opt60=b"PXEClient:Arch:00007:UNDI:003010", opt93=b"\x00\x07", opt77=b"iPXE")
    assert boot_answer(r, HOST, S).kind == "script"


def test_unknown_macs_follow_the_configured_default():
    for choice in ("menu", "local"):
        a = boot_answer(pxe(0), None, BootSettings("10.77.0.1", "http://x:1", choice))
        assert a is not None and a.filename == "undionly.kpxe"
    assert boot_answer(pxe(0), None, BootSettings("10.77.0.1", "http://x:1", "ignore")) is None
    # a known host still boots when unknown clients are ignored
    assert boot_answer(pxe(0), HOST, BootSettings("10.77.0.1", "http://x:1", "ignore")) is not None


def test_non_pxe_clients_and_unknown_arches_get_no_boot_answer():
    plain = req(opt60=b"udhcp 1.35.0")
    assert not is_pxe_client(plain) and boot_answer(plain, HOST, S) is None
    assert boot_answer(pxe(2), HOST, S) is None  # EFI Itanium: no binary for it


def test_arch_falls_back_to_the_vendor_class():
    assert client_arch(req(opt60=b"PXEClient:Arch:00007:UNDI:003016")) == 7
    assert client_arch(req(opt60=b"PXEClient")) is None


def captured_requests(name: str) -> list[codec.Packet]:
    from tests.dhcp_helpers import DATA, pcap_udp_payloads

    return [codec.parse(p) for s, d, p in pcap_udp_payloads(DATA / name) if d == 67]


def test_captured_ovmf_then_ipxe_requests_get_binary_then_script():
    """Requests taken in the lab: OVMF's own PXE client, then the snponly.efi it loaded."""
    reqs = captured_requests("ovmf-then-ipxe.pcap")
    firmware = [r for r in reqs if not r.user_classes]
    ipxe = [r for r in reqs if r.user_classes]
    assert firmware and ipxe
    for r in firmware:
        assert r.uuid is not None and r.options[codec.OPT_CLIENT_NDI] == b"\x01\x03\x00"
        a = boot_answer(r, None, S)
        assert (a.kind, a.filename, a.arch) == ("tftp", "snponly.efi", 7)
    for r in ipxe:
        assert codec.OPT_IPXE_ENCAP in r.options
        a = boot_answer(r, None, S)
        assert a.kind == "script" and a.filename == f"http://10.77.0.1:8081/boot/{r.mac_str}.ipxe"


def test_captured_bios_ipxe_rom_request_gets_the_script():
    reqs = captured_requests("ipxe-bios-proxy.pcap")
    assert reqs and all(r.client_arch == 0 for r in reqs)
    a = boot_answer(reqs[0], None, S)
    assert a.kind == "script" and a.filename.endswith("/boot/52:54:00:3e:00:00.ipxe")
