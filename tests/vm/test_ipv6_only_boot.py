"""Issue 16: a UEFI VM boots IPv6-only.

`nixie serve` with DHCPv4 off, router advertisements on and stateful DHCPv6, in a
namespace with its LAN bridge and a generation built by the real `nix`. An OVMF VM
whose PXEv4 boot option is turned off (lab.qemu, netboot="pxe6") starts "UEFI
PXEv6": the firmware's DHCPv6 gets `tftp://[router]/snponly.efi` from us (arch 7),
fetches it over TFTP/IPv6; iPXE asks DHCPv6 as `iPXE` and gets the host's script
URL over IPv6; kernel and initrd come over HTTP/IPv6 with `nixie.api` in IPv6;
stage 2 reports `booted` over IPv6, and `nixie host show --json` shows the host's
IPv6 address. Not one DHCPv4 answer leaves the router.

Then the same host in mode `cached` (issue 17 item 4) with an empty 256 MiB virtio disk,
powered on again the same way: its stage 1 brings the NIC up by SLAAC (no DHCPv4, and the
lab's busybox has no DHCPv6 client), makes the disk layout, fetches the closure listing and
every store path over IPv6 from the host's SLAAC address, and switches root to the disk;
stage 2 reports `booted` with mode `cached`, and the disk, read offline, holds the closure.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

from lab.qemu import PxeVM, create_disk
from tests.conftest import run_nixie
from tests.vm.pxe_lab import appliance_serving, boot_captured
from tests.vm.test_cached_netboot import check_store_whole
from tests.vm.test_install_disk import wait_until

MAC = "52:54:00:4e:58:36"
SERVER = "10.77.0.1"
ROUTER6 = "fd00:77::1"
PREFIX = ipaddress.IPv6Network("fd00:77::/64")
BOOT_TIMEOUT = 360
DISK_MIB = 256
# tftp and boot listeners left to their defaults: the LAN's IPv4 and IPv6 addresses
IPV6_ONLY = {"dhcp": {"mode": "off"}, "tftp": {}, "boot": {"menu_timeout_seconds": 1},
             "ra": {"enable": True}, "dhcp6": {"mode": "stateful"},
             "lan": {"interface": "br-lan", "address": f"{SERVER}/24", "domain": "lab.nixie",
                     "address6": f"{ROUTER6}/64"}}


def slaac_address(prefix: ipaddress.IPv6Network, mac: str) -> ipaddress.IPv6Address:
    """The address the kernel forms from the router's prefix and the MAC (modified EUI-64,
    Linux's default)."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return prefix[int.from_bytes(eui, "big")]


def all_events(cfg_path: Path) -> list[dict]:
    r = run_nixie("events", "--json", "--limit", "2000", config=cfg_path)
    assert r.returncode == 0, r.stderr
    return sorted(json.loads(r.stdout), key=lambda e: e["id"])


def cached_boot(ns, cfg_path: Path, tmp: Path) -> tuple[list[dict], str, Path, float]:
    """demo in mode `cached`, powered on IPv6-only with an empty disk until it reports
    `booted` again: (the router's events of this boot, the console, the disk, seconds from
    power-on). The VM is stopped whatever happens. Every event, not the host's timeline:
    the router puts a store fetch on a host's timeline by the address its boot script was
    fetched from or its DHCP lease, and stage 1's SLAAC address is neither (iPXE fetched
    the script from its DHCPv6 address)."""
    r = run_nixie("host", "set", "demo", "--mode", "cached", config=cfg_path)
    assert r.returncode == 0, r.stderr
    disk = create_disk(tmp / "disk.img", DISK_MIB)
    mark = all_events(cfg_path)[-1]["id"]

    def this_boot() -> list[dict]:
        return [e for e in all_events(cfg_path) if e["id"] > mark]

    vm = PxeVM(ns, "br-lan", "uefi", MAC, tmp / "vm-cached", netboot="pxe6", disk=disk)
    t0 = time.monotonic()
    try:
        vm.start()
        booted = wait_until(lambda: any(e["kind"] == "host.booted" and e["host"] == "demo"
                                        for e in this_boot()), BOOT_TIMEOUT, [vm])
        took = time.monotonic() - t0
        console = vm.console()
    finally:
        vm.stop()
    assert booted, console[-4000:]
    return this_boot(), console, disk, took


def test_a_uefi_vm_boots_ipv6_only_to_booted(tmp_path):
    with appliance_serving(tmp_path, SERVER, sections=IPV6_ONLY) as (ns, cfg_path, _cfg):
        host, console, pcap = boot_captured(ns, cfg_path, tmp_path, MAC, netboot="pxe6",
                                            capture="udp port 67 or udp port 68",
                                            timeout=BOOT_TIMEOUT)
        events = json.loads(run_nixie("events", "--json", "--limit", "500",
                                      config=cfg_path).stdout)
        check_plain_boot(host, console, events)
        cached_events, cached_console, disk, took = cached_boot(ns, cfg_path, tmp_path)
        cached_host = json.loads(run_nixie("host", "show", "demo", "--json",
                                           config=cfg_path).stdout)
    check_cached_boot(cached_host, cached_events, cached_console, disk, tmp_path, took)
    # DHCPv4 was off: not one packet from a DHCPv4 server on the LAN, in either boot
    served = subprocess.run(["tcpdump", "-n", "-r", str(pcap), "udp src port 67"],
                            capture_output=True, text=True)
    assert served.stdout.strip() == "", served.stdout


def check_plain_boot(host: dict, console: str, events: list[dict]) -> None:
    """The netboot (the closure in the initrd): every step over IPv6."""
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


def check_cached_boot(host: dict, events: list[dict], console: str, disk: Path, tmp: Path,
                      took: float) -> None:
    """The cached boot: stage 1 up by SLAAC, every store path fetched from that address,
    the system run from the disk, which holds the closure."""
    tail = console[-4000:]
    slaac = slaac_address(PREFIX, MAC)
    assert (host["state"], host["boot_mode"]) == ("booted", "cached"), host
    assert ipaddress.IPv6Address(host["ip6"]) == slaac and host["ip"] is None, host
    assert "Start PXE over IPv6" in console, tail
    assert f"nixie.api=http://[{ROUTER6}]:8081 " in console and "nixie.mode=cached" in console
    # stage 1: the NIC up by SLAAC (its address on the console), no DHCPv4 tried
    ipv6 = console.split("NIXIE-CACHED ipv6: ", 1)[1].splitlines()[0]
    assert f"inet6 {slaac}/64 scope global" in ipv6, ipv6
    assert "NIXIE-DHCP-FAILED" not in console and "udhcpc" not in console, tail
    assert "NIXIE-CACHED partition: /dev/vda (256 MiB)" in console, tail  # an empty disk
    toplevel = host["generations"][0]["toplevel"]
    for marker in ("NIXIE-STAGE1-CACHED /dev/vda", f"NIXIE-CACHED-BOOT demo {toplevel}",
                   "NIXIE-REPORTED"):
        assert marker in console, f"no {marker}\n{tail}"
    # the stage 1 alone was sent (no closure initrd), then the listing and every path,
    # each asked for from the host's SLAAC address
    kinds = [e["kind"] for e in events]
    assert "boot.stage1" in kinds and "boot.initrd" not in kinds, kinds
    listed = [e for e in events if e["kind"] == "boot.closure"][-1]
    paths = [e for e in events if e["kind"] == "boot.path"]
    assert len(paths) == listed["data"]["paths"] and \
        {e["data"]["status"] for e in paths} == {"completed"}, paths
    fetched = sum(e["data"]["bytes"] for e in paths)
    assert fetched == listed["data"]["bytes"], (fetched, listed)
    for e in [listed, *paths, *(e for e in events if e["kind"] == "host.booted")]:
        assert ipaddress.ip_address(e["ip"]) == slaac, (e["kind"], e["ip"], str(slaac))
        # on the host's timeline: the router knows the SLAAC address's MAC is the host's
        assert e["host"] == host["name"], (e["kind"], e["host"])
    for e in events:
        if e.get("ip"):
            assert ipaddress.ip_address(e["ip"]).version == 6, e
    booted = [e for e in events if e["kind"] == "host.booted"][-1]["message"]
    count = listed["data"]["paths"]
    assert "mode cached" in booted and toplevel in booted, booted
    assert f"fetched {count} of {count} store paths ({fetched} bytes)" in booted, booted
    assert "0 kept on the disk, 0 damaged fetched again; sizes checked" in booted, booted
    check_store_whole(disk, toplevel, tmp / "offline")
    print("cached IPv6 boot:", json.dumps({"power-on to booted s": round(took, 1),
                                           "paths": count, "bytes fetched": fetched}))
