"""Issue 16: a UEFI VM boots IPv6-only.

`nixie serve` with DHCPv4 off, router advertisements on and stateful DHCPv6, in a
namespace with its LAN bridge and a generation built by the real `nix`. An OVMF VM
whose PXEv4 boot option is turned off (lab.qemu, netboot="pxe6") starts "UEFI
PXEv6": the firmware's DHCPv6 gets `tftp://[router]/snponly.efi` from us (arch 7),
fetches it over TFTP/IPv6; iPXE asks DHCPv6 as `iPXE` and gets the host's script
URL over IPv6; kernel and initrd come over HTTP/IPv6 with `nixie.api` in IPv6;
stage 2 reports `booted` over IPv6, and `nixie host show --json` shows the host's
IPv6 address. Not one DHCPv4 answer leaves the router.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from tests.conftest import run_nixie
from tests.vm.pxe_lab import appliance_serving, boot_captured

MAC = "52:54:00:4e:58:36"
SERVER = "10.77.0.1"
ROUTER6 = "fd00:77::1"
PREFIX = ipaddress.IPv6Network("fd00:77::/64")
BOOT_TIMEOUT = 360
# tftp and boot listeners left to their defaults: the LAN's IPv4 and IPv6 addresses
IPV6_ONLY = {"dhcp": {"mode": "off"}, "tftp": {}, "boot": {"menu_timeout_seconds": 1},
             "ra": {"enable": True}, "dhcp6": {"mode": "stateful"},
             "lan": {"interface": "br-lan", "address": f"{SERVER}/24", "domain": "lab.nixie",
                     "address6": f"{ROUTER6}/64"}}


def test_a_uefi_vm_boots_ipv6_only_to_booted(tmp_path):
    with appliance_serving(tmp_path, SERVER, sections=IPV6_ONLY) as (ns, cfg_path, _cfg):
        host, console, pcap = boot_captured(ns, cfg_path, tmp_path, MAC, netboot="pxe6",
                                            capture="udp port 67 or udp port 68",
                                            timeout=BOOT_TIMEOUT)
        events = json.loads(run_nixie("events", "--json", "--limit", "500",
                                      config=cfg_path).stdout)

    tail = console[-4000:]
    assert host["state"] == "booted", f"demo is {host['state']}:\n{tail}"
    # the firmware took its IPv6 PXE option (PXEv4 was turned off), stage 2 reported
    assert "Start PXE over IPv6" in console, tail
    assert "NIXIE-STAGE2 demo" in console and "NIXIE-REPORTED" in console, tail
    # iPXE got its script URL from our DHCPv6, and the kernel its router URL, in IPv6
    assert f"Filename: http://[{ROUTER6}]:8081/boot/{MAC}.ipxe" in console, tail
    assert f"nixie.api=http://[{ROUTER6}]:8081 " in console, tail
    # the host's IPv6 address is shown (its report came from it), and no IPv4 one
    assert ipaddress.IPv6Address(host["ip6"]) in PREFIX, host
    assert host["ip"] is None, host
    # our DHCPv6 answered the firmware with the TFTP URL, and iPXE with the script URL
    answers = {(e["data"]["kind"], e["data"]["boot_url"]) for e in events
               if e["kind"] == "boot.dhcp6"}
    assert ("tftp", f"tftp://[{ROUTER6}]/snponly.efi") in answers, answers
    assert ("script", f"http://[{ROUTER6}]:8081/boot/{MAC}.ipxe") in answers, answers
    # every step of the boot came from an IPv6 address of the VM
    steps: dict[str, set] = {}
    first: dict[str, float] = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        first.setdefault(e["kind"], e["ts"])
        if e["kind"] in ("boot.tftp", "boot.script", "boot.kernel", "boot.initrd", "host.booted"):
            steps.setdefault(e["kind"], set()).add(e["ip"])
    for kind in ("boot.tftp", "boot.script", "boot.kernel", "boot.initrd", "host.booted"):
        assert steps.get(kind), f"no {kind} event: {sorted(steps)}"
        assert all(ipaddress.ip_address(ip).version == 6 for ip in steps[kind]), (kind, steps)
    t0 = first["boot.dhcp6"]
    print("boot steps (s after the first DHCPv6 answer):", {k: round(first[k] - t0, 1) for k in (
        "boot.tftp", "boot.script", "boot.kernel", "boot.initrd", "host.booted") if k in first})
    # DHCPv4 was off: not one packet from a DHCPv4 server on the LAN
    served = subprocess.run(["tcpdump", "-n", "-r", str(pcap), "udp src port 67"],
                            capture_output=True, text=True)
    assert served.stdout.strip() == "", served.stdout
