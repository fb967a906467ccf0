"""Stateless mode end to end (Nixie's laptop use): `nixie serve --hosts hosts.json
--flake REF` next to an existing DHCP server (dnsmasq, in its own namespace on the
same LAN) builds the listed host, answers its PXE boot with proxy-DHCP, serves
TFTP/HTTP, and exits 0 once the VM has booted and reported."""

from __future__ import annotations

import json
import uuid

from lab import flake as labflake
from lab.netns import start_serve, wait_port
from lab.qemu import PxeVM
from tests.vm.pxe_lab import OtherDhcpServer, router_namespace, vm_config

MAC = "52:54:00:4e:58:21"


def test_stateless_serve_exits_0_after_the_listed_vm_booted(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"stateless {uuid.uuid4()}")
    hosts_json = tmp_path / "hosts.json"
    hosts_json.write_text(json.dumps({"demo": {"mac_address": MAC}}))  # Nixie's own form
    cfg = vm_config(tmp_path / "unused")
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    with router_namespace() as lan:
        with OtherDhcpServer(lan, tmp_path, ("10.77.0.150", "10.77.0.199")) as other:
            serve = start_serve(lan, cfg_path, tmp_path / "serve.log", "--hosts", str(hosts_json),
                                "--flake", str(flake), "--timeout", "480",
                                "--state-dir", str(tmp_path / "state"))
            vm = PxeVM(lan, "br-lan", "bios", MAC, tmp_path / "vms")
            try:
                # the services bind before the firmware asks
                assert wait_port(lan, "10.77.0.1", 8081), (tmp_path / "serve.log").read_text()
                vm.start()
                rc = serve.wait(540)
            finally:
                console = vm.console()
                vm.stop()
                if serve.poll() is None:
                    serve.kill()
                    serve.wait()
    out = (tmp_path / "serve.log").read_text()
    assert rc == 0, out[-3000:] + console[-2000:]
    assert "all hosts done: demo" in out
    assert "NIXIE-STAGE2 demo" in console
    # the address came from the other DHCP server; ours only gave boot information
    leased = other.leases.read_text()
    assert MAC in leased
    import sqlite3

    db = sqlite3.connect(tmp_path / "state" / "nixie.db")
    assert db.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
    state, ip = db.execute("SELECT state, ip FROM hosts WHERE name = 'demo'").fetchone()
    assert state == "booted" and ip in leased
    assert not (tmp_path / "unused").exists()
