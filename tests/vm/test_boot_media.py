"""Boot media end to end (issue 20): machines with PXE disabled boot what `nixie media`
wrote and reach `booted` as their hosts.

Three VMs run at once, one boot each: a BIOS VM boots the hybrid ISO as a CD-ROM
(isolinux -> ipxe.lkrn with the media's iPXE script as its initrd), a UEFI VM boots the
raw USB image as a USB stick, and a UEFI VM boots the hybrid ISO as a CD-ROM with a
static address (GRUB EFI sources the same nixie.ipxe, the only file with URL and token,
sets the address from its `ifopen`/`${grub}set` lines and loads /boot/m/<token>.grub:
this proves GRUB parses the shared script). No NIC has an option
ROM, OVMF's PXE boot options are off, and the scripts came only through the media token:
the router's events show `/boot/m/` fetches for every host and no plain `/boot/<mac>.ipxe`.

Routed: a BIOS VM in a second namespace, on its own segment (a plain DHCP server there, no
boot options) routed to the router over another link, boots its host's ISO with the token;
a plain script fetch from there gets 403, and so does the media URL once the token is
revoked.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

from lab import flake as labflake
from lab.netns import Netns, bridge, enslave, veth
from lab.qemu import PxeVM
from tests.conftest import run_nixie
from tests.vm.pxe_lab import OtherDhcpServer, add_and_build, wait_booted

BIOS_MAC = "52:54:00:4e:58:61"
UEFI_MAC = "52:54:00:4e:58:62"
UEFI_ISO_MAC = "52:54:00:4e:58:63"
STATIC_IP = "10.77.0.50"
BOOT_TIMEOUT = 420


def test_pxe_less_vms_boot_the_iso_bios_and_the_usb_image_uefi(appliance):
    ns, cfg_path, _cfg, tmp = appliance
    flake = labflake.materialise(tmp / "flake", release=f"media {uuid.uuid4()}")
    nix = (flake / "flake.nix").read_text()  # a third system, like demo2, for the UEFI ISO
    (flake / "flake.nix").write_text(nix.replace("        demo2 = lab.nixosSystem {", (
        '        demo3 = lab.nixosSystem {\n          hostName = "demo3";\n'
        f'          macs = [ "{UEFI_ISO_MAC}" ];\n        }};\n'
        "        demo2 = lab.nixosSystem {")))
    labflake.commit(flake, "demo3")
    add_and_build(cfg_path, flake, {"demo": BIOS_MAC, "demo2": UEFI_MAC, "demo3": UEFI_ISO_MAC})
    iso, usb, iso3 = tmp / "demo.iso", tmp / "demo2.img", tmp / "demo3.iso"
    # demo3's ISO has a static address (GRUB runs the script's `ifopen`/`${grub}set` lines);
    # its reservation is the same address, so the booted system's DHCP lease matches it
    assert run_nixie("host", "set", "demo3", "--ip", STATIC_IP, config=cfg_path).returncode == 0
    static = ("--address", f"{STATIC_IP}/24", "--gateway", "10.77.0.1")
    for host, fmt, out, extra in (("demo", "iso", iso, ()), ("demo2", "usb", usb, ()),
                                  ("demo3", "iso", iso3, static)):
        r = run_nixie("media", host, "--format", fmt, "-o", str(out), *extra, config=cfg_path)
        assert r.returncode == 0, r.stderr

    with (PxeVM(ns, "br-lan", "bios", BIOS_MAC, tmp / "vms", media=iso) as bios,
          PxeVM(ns, "br-lan", "uefi", UEFI_MAC, tmp / "vms", media=usb) as uefi,
          PxeVM(ns, "br-lan", "uefi", UEFI_ISO_MAC, tmp / "vms", media=iso3) as uefi_iso):
        vms = {"demo": bios, "demo2": uefi, "demo3": uefi_iso}
        started = time.monotonic()
        hosts = wait_booted(cfg_path, list(vms), BOOT_TIMEOUT,
                            give_up=lambda: all(v.proc.poll() is not None for v in vms.values()))
        print(f"media boots: {len(vms)} VMs booted in {time.monotonic() - started:.0f} s")
        consoles = {n: v.console() for n, v in vms.items()}

    for name, h in hosts.items():
        assert h["state"] == "booted", f"{name} is {h['state']}:\n{consoles[name][-3000:]}"
        assert "NIXIE-STAGE2" in consoles[name], consoles[name][-3000:]
    for name in ("demo2", "demo3"):
        assert "Start PXE over" not in consoles[name]
        assert "Nixie boot media: network, then the router" in consoles[name]  # GRUB ran it
    events = json.loads(run_nixie("events", "--json", "--limit", "1000", config=cfg_path).stdout)
    scripts = [e for e in events if e["kind"] == "boot.script"]
    by_host = {n: [e for e in scripts if e.get("host_id") == hosts[n]["id"]] for n in hosts}
    assert any(e["data"].get("media") == "ipxe" for e in by_host["demo"]), by_host["demo"]
    assert any(e["data"].get("media") == "grub" for e in by_host["demo2"]), by_host["demo2"]
    assert any(e["data"].get("media") == "grub" for e in by_host["demo3"]), by_host["demo3"]
    # no PXE at all: nothing fetched a plain /boot/<mac>.ipxe or an iPXE binary
    assert all("media" in e["data"] for n in hosts for e in by_host[n]), by_host
    assert not [e for e in events if e["kind"] == "boot.ipxe"]
    tokens = json.loads(run_nixie("media", "--list", "--json", config=cfg_path).stdout)
    assert {t["host"]: t["uses"] >= 1 for t in tokens} == {"demo": True, "demo2": True,
                                                           "demo3": True}
    # GRUB fetched demo3's script from the static address the ISO's script set
    assert [t["last_ip"] for t in tokens if t["host"] == "demo3"] == [STATIC_IP], tokens
    assert hosts["demo3"]["ip"] == STATIC_IP


def test_vm_on_a_routed_segment_boots_its_media_with_the_token(appliance):
    """A second namespace (bridge br-far, a plain dnsmasq: addresses and a gateway, no boot
    options) routed to the router through its own link: the BIOS VM there boots its host's
    ISO and reaches `booted`; without the token, and after revoking it, the router refuses."""
    ns, cfg_path, _cfg, tmp = appliance
    flake = labflake.materialise(tmp / "flake", release=f"media-routed {uuid.uuid4()}")
    add_and_build(cfg_path, flake, {"demo": BIOS_MAC})
    iso = tmp / "demo.iso"
    assert run_nixie("media", "demo", "--format", "iso", "-o", str(iso),
                     config=cfg_path).returncode == 0
    with Netns() as far:
        bridge(far, "br-far")
        veth(ns, "far0", far, "up0")
        ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "far0")
        enslave(far, "up0", "br-far")
        # one address per MAC: iPXE and the booted system's DHCP client (which sends its
        # own client id) must come from the address the agent token was bound to
        with OtherDhcpServer(far, tmp, ("192.0.2.100", "192.0.2.150"), bridge_name="br-far",
                             address="192.0.2.2/24", gateway="192.0.2.1",
                             extra=(f"--dhcp-host={BIOS_MAC},192.0.2.120",)) as dhcp:
            dhcp.ns.run("ip", "route", "add", "default", "via", "192.0.2.1")
            plain = dhcp.ns.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://10.77.0.1:8081/boot/{BIOS_MAC}.ipxe", check=False)
            assert plain.stdout == "403"  # beyond the LAN: no token, no script
            with PxeVM(far, "br-far", "bios", BIOS_MAC, tmp / "vms", media=iso) as vm:
                host = wait_booted(cfg_path, ["demo"], BOOT_TIMEOUT,
                                   give_up=lambda: vm.proc.poll() is not None)["demo"]
                console = vm.console()
            (tok,) = json.loads(run_nixie("media", "--list", "--json", config=cfg_path).stdout)
            assert run_nixie("media", "--revoke", str(tok["id"]), config=cfg_path).returncode == 0
            script = subprocess.run(["xorriso", "-indev", str(iso), "-osirrox", "on", "-extract",
                                     "/nixie.ipxe", str(tmp / "s.ipxe")], capture_output=True)
            assert script.returncode == 0
            url = re.search(r"chain (\S+)\?", (tmp / "s.ipxe").read_text()).group(1)
            revoked = dhcp.ns.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url,
                                  check=False)
    why = "\n".join(f"{e['kind']} {e['ip']} {e['message']}" for e in host["events"][:30])
    assert host["state"] == "booted", f"demo is {host['state']}:\n{why}\n{console[-3000:]}"
    assert host["ip"] == "192.0.2.120", host["ip"]  # it phoned home from the far side
    assert tok["uses"] >= 1 and tok["last_ip"] == host["ip"]
    assert revoked.stdout == "403"
