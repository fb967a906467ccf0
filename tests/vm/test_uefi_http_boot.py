"""UEFI HTTP Boot end to end: OVMF's own HTTP boot client, no TFTP anywhere.

`nixie serve` runs in a namespace with its LAN bridge and a generation built by
the real `nix` from the lab flake. An OVMF VM whose PXE boot options are turned
off (lab.qemu, netboot="http") starts its "UEFI HTTPv4" option, which has
an empty URI: the firmware asks DHCP with vendor class `HTTPClient`, our DHCP
answers with `http://.../ipxe/snponly.efi` (and `HTTPClient` in option 60), the
firmware GETs that from our HTTP boot server and runs it; iPXE asks DHCP again,
chains `/boot/<mac>.ipxe`, boots kernel + initrd, and stage 2 reports `booted`.
A capture on the LAN bridge must hold no TFTP packet at all.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import run_nixie
from tests.vm.pxe_lab import appliance_serving, boot_captured

MAC = "52:54:00:4e:58:31"
SERVER = "10.77.0.1"
BOOT_TIMEOUT = 300


@pytest.fixture
def appliance(tmp_path):
    with appliance_serving(tmp_path, SERVER) as (ns, path, _cfg):
        yield ns, path, tmp_path


def test_ovmf_http_boot_learns_the_url_from_our_dhcp_and_never_uses_tftp(appliance):
    ns, cfg_path, tmp = appliance
    host, console, pcap = boot_captured(ns, cfg_path, tmp, MAC, netboot="http",
                                        capture="udp", timeout=BOOT_TIMEOUT)

    tail = console[-3000:]
    assert host["state"] == "booted", f"demo is {host['state']}:\n{tail}"
    assert "NIXIE-STAGE2" in console, tail
    # the firmware started its HTTP boot option (PXE options were turned off)
    assert "Start HTTP Boot over IPv4" in console and 'starting Boot0001 "UEFI HTTPv4' in console
    assert "Start PXE over" not in console

    events = json.loads(run_nixie("events", "--json", "--limit", "500", config=cfg_path).stdout)
    url = f"http://{SERVER}:8081/ipxe/snponly.efi"
    # our DHCP answered the firmware's HTTPClient request with the URL (arch 16: x64 HTTP)
    dhcp = [e for e in events if e["kind"] == "boot.dhcp" and e.get("mac") == MAC]
    answers = [(e["data"]["kind"], e["data"]["boot_file"], e["data"]["arch"]) for e in dhcp]
    assert ("http", url, 16) in answers, answers
    assert all(kind != "tftp" for kind, _, _ in answers), answers
    # ...and the firmware fetched that binary from our HTTP boot server (from the
    # address our DHCP gave it); only the firmware asks for /ipxe/, iPXE does not
    fetched = [e for e in events if e["kind"] == "boot.ipxe"]
    assert {e["data"]["file"] for e in fetched} == {"snponly.efi"}, fetched
    assert {e["ip"] for e in fetched} == {host["ip"]}, (fetched, host["ip"])
    assert "GET" in {e["data"]["method"] for e in fetched}, fetched
    host_kinds = {e["kind"] for e in host["events"]}
    for step in ("boot.script", "boot.kernel", "boot.initrd", "host.booted"):
        assert step in host_kinds, f"no {step} event in {sorted(host_kinds)}"
    # no TFTP: no event from our TFTP server, and not one packet to or from port 69
    assert not [e for e in events if e["kind"] == "boot.tftp"]
    tftp = subprocess.run(["tcpdump", "-n", "-r", str(pcap), "udp port 69"],
                          capture_output=True, text=True)
    dhcp_seen = subprocess.run(["tcpdump", "-n", "-r", str(pcap), "udp port 67"],
                               capture_output=True, text=True)
    assert dhcp_seen.stdout.strip(), dhcp_seen.stderr  # the capture did see the boot
    assert tftp.stdout.strip() == "", tftp.stdout
