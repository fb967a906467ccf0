"""Power-on to `booted`, through the whole appliance and nothing else.

`nixie serve` runs in a namespace with its LAN bridge: our DHCP (authoritative),
our TFTP, our HTTP boot, and a generation its build worker built with the real
`nix` from the lab flake. A BIOS VM (SeaBIOS -> the NIC's iPXE ROM) and a UEFI
VM (OVMF's own PXE -> TFTP snponly.efi -> iPXE) power on, take a lease, fetch
the host's script, kernel and initrd (stage-1 initrd + one zstd CPIO per
closure path), run stage 1 and stage 2 from /nix/store in the initramfs and
report with their per-boot token. `nixie host show --json` must then say
`booted`, with the address DHCP gave, and the host's events must hold every
boot step. Router advertisements are on (the default): each booted VM answers the
router over IPv6 from an address in the LAN's prefix (SLAAC), seen in the
router's neighbour table. `/metrics`, scraped from the LAN before and after, must show
one boot per firmware and counters moved by exactly this traffic (tests/vm/metrics_check.py).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from contextlib import ExitStack

from lab import flake as labflake
from lab.qemu import PxeVM
from tests.conftest import run_nixie
from tests.vm.metrics_check import check_boot_metrics, scrape
from tests.vm.pxe_lab import add_and_build, ipv6_neighbours, wait_booted

MACHINES = {"demo": ("52:54:00:4e:58:11", "bios"), "demo2": ("52:54:00:4e:58:12", "uefi")}
BOOT_TIMEOUT = 420  # two TCG guests share two cores with the rest of the suite


def test_bios_and_uefi_vms_boot_to_booted(appliance):
    ns, cfg_path, cfg, tmp = appliance
    flake = labflake.materialise(tmp / "flake", release=f"e2e {uuid.uuid4()}")
    add_and_build(cfg_path, flake, {name: mac for name, (mac, _fw) in MACHINES.items()})

    lan_ip = cfg["lan"]["address"].split("/")[0]
    before = scrape(ns, lan_ip)
    with ExitStack() as running:
        vms = [running.enter_context(PxeVM(ns, "br-lan", fw, mac, tmp / "vms"))
               for mac, fw in MACHINES.values()]
        states = wait_booted(cfg_path, MACHINES, BOOT_TIMEOUT)
        consoles = {vm.firmware: vm.console()[-2500:] for vm in vms}
        prefix6, neighbours6 = ipv6_neighbours(ns, [mac for mac, _ in MACHINES.values()])

    pool = [ipaddress.IPv4Address(a) for a in cfg["dhcp"]["range"]]
    leases = {r["mac"]: r["ip"] for r in json.loads(  # IPv4: the DHCPv6 leases have family 6
        run_nixie("lease", "list", "--json", config=cfg_path).stdout) if r.get("family") != 6}
    for name, (mac, fw) in MACHINES.items():
        h = states[name]
        assert h["state"] == "booted", f"{name} ({fw}) is {h['state']}:\n{consoles[fw]}"
        assert "NIXIE-STAGE2" in consoles[fw]
        # the address it reported from is the one our DHCP gave it
        assert h["ip"] == leases[mac], (h["ip"], leases)
        assert pool[0] <= ipaddress.IPv4Address(h["ip"]) <= pool[1]
        kinds = [e["kind"] for e in h["events"]]
        for step in ("boot.dhcp", "boot.script", "boot.kernel", "boot.initrd", "host.booted"):
            assert step in kinds, f"{name}: no {step} event in {sorted(set(kinds))}"
        if fw == "uefi":  # OVMF fetched snponly.efi from our TFTP first
            assert "boot.tftp" in kinds or any(
                e["kind"] == "boot.dhcp" and "snponly.efi" in json.dumps(e.get("data"))
                for e in h["events"]), sorted(set(kinds))
        # IPv4 and IPv6 on the LAN: it made its address from our RA's prefix
        assert neighbours6.get(mac), (name, str(prefix6), neighbours6)
        assert h["generations"] and h["current_generation"] == h["generations"][0]["number"]
    check_boot_metrics(ns, lan_ip, cfg_path, before, [fw for _mac, fw in MACHINES.values()])
