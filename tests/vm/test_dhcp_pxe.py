"""PXE clients under QEMU get the right next step from our DHCP server.

- OVMF (UEFI firmware PXE, empty romfile), authoritative mode: DHCP with
  arch 7 -> TFTP snponly.efi -> iPXE asks DHCP again -> HTTP /boot/<mac>.ipxe.
- SeaBIOS with the NIC's iPXE ROM, proxy mode next to dnsmasq (which hands
  out the address, without PXE options) -> HTTP /boot/<mac>.ipxe.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest

from appliance.config.schema import example_config
from lab.netns import start_serve
from netservices.dhcp import codec
from tests.dhcp_helpers import pcap_udp_payloads
from tests.vm.pxe_lab import OtherDhcpServer, PxeLab, router_namespace

VM_SECONDS = 240


def serve(ns, tmp, mode: str) -> subprocess.Popen:
    cfg = example_config(state_dir=str(tmp / "state"), interface="br-lan")
    cfg["dhcp"]["mode"] = mode
    cfg["dns"]["enable"] = False
    cfg["web"]["listen"] = ["10.77.0.1:8080"]
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return start_serve(ns, path, tmp / "serve.log")


def dhcp_packets_when(pcap, done, timeout: float = 10) -> list[codec.Packet]:
    """The DHCP packets captured so far, once `done(packets)` holds or `timeout` passes:
    the capture may lag a boot that (with router advertisements) fetches at once."""
    deadline = time.monotonic() + timeout
    while True:
        pkts = dhcp_packets(pcap)
        if done(pkts) or time.monotonic() >= deadline:
            return pkts
        time.sleep(0.2)


def dhcp_packets(pcap) -> list[codec.Packet]:
    out = []
    for sport, dport, payload in pcap_udp_payloads(pcap):
        if {sport, dport} & {67, 68, 4011}:
            out.append(codec.parse(payload))
    return out


def tftp_requests(pcap) -> list[bytes]:
    return [p[2:].split(b"\0")[0] for s, d, p in pcap_udp_payloads(pcap) if d == 69 and p[:2] == b"\0\1"]


def events(db, kind):
    c = sqlite3.connect(db)
    try:
        return [(m, json.loads(d) if d else None) for m, d in
                c.execute("SELECT mac, data FROM events WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        c.close()


@pytest.fixture
def lab(tmp_path):
    ns = router_namespace()
    lab = PxeLab(tmp_path, ns)
    try:
        yield lab
    finally:
        lab.close()
        ns.close()


def test_ovmf_uefi_pxe_gets_snponly_over_tftp_then_the_http_script(lab, tmp_path):
    mac = "52:54:00:3e:00:07"
    srv = serve(lab.ns, tmp_path, "authoritative")
    lab.procs.append(srv)
    lab.start_services()
    lab.start_vm(mac, uefi=True)
    lines = lab.wait_http(f"/boot/{mac}.ipxe", VM_SECONDS)
    assert f"/boot/{mac}.ipxe" in lines, (lines, (tmp_path / "serve.log").read_text()[-2000:])
    assert b"snponly.efi" in tftp_requests(lab.pcap)
    pkts = dhcp_packets_when(lab.pcap, lambda ps: sum(p.op == 2 and p.file != b"" for p in ps) >= 2)
    firmware_offer = [p for p in pkts if p.op == 2 and p.file == b"snponly.efi"]
    ipxe_offer = [p for p in pkts if p.op == 2 and p.file == f"http://10.77.0.1:8081/boot/{mac}.ipxe".encode()]
    assert firmware_offer and ipxe_offer
    assert firmware_offer[0].siaddr == codec.ip_bytes("10.77.0.1")
    firmware_req = [p for p in pkts if p.op == 1 and p.client_arch == 7 and b"iPXE" not in p.user_classes]
    assert firmware_req and firmware_req[0].vendor_class.startswith(b"PXEClient:Arch:00007")
    # iPXE is told there is no ProxyDHCP to wait for (175.176 no-pxedhcp): it REQUESTs on
    # the first OFFER, instead of re-sending its DISCOVER while it waits ~3 s for one
    assert ipxe_offer[0].options.get(codec.OPT_IPXE_ENCAP) == bytes((176, 1, 1))
    ipxe_sent = [p.message_type for p in pkts if p.op == 1 and b"iPXE" in p.user_classes]
    assert codec.REQUEST in ipxe_sent, ipxe_sent
    assert ipxe_sent[:ipxe_sent.index(codec.REQUEST)] == [codec.DISCOVER], ipxe_sent
    db = tmp_path / "state" / "nixie.db"
    boots = events(db, "boot.dhcp")
    assert ("snponly.efi" in [d["boot_file"] for _, d in boots])
    assert all(m == mac for m, _ in boots)
    c = sqlite3.connect(db)
    (state,) = c.execute("SELECT state FROM leases WHERE mac = ?", (mac,)).fetchone()
    c.close()
    assert state == "bound"


def test_bios_ipxe_rom_gets_the_script_from_proxy_dhcp_next_to_dnsmasq(lab, tmp_path):
    mac = "52:54:00:3e:00:00"
    with OtherDhcpServer(lab.ns, tmp_path, ("10.77.0.100", "10.77.0.150")) as other:
        srv = serve(lab.ns, tmp_path, "proxy")
        lab.procs.append(srv)
        lab.start_services()
        lab.start_vm(mac, uefi=False)
        lines = lab.wait_http(f"/boot/{mac}.ipxe", VM_SECONDS)
        assert f"/boot/{mac}.ipxe" in lines, (lines, other.log.read_text()[-2000:])
        servers = {codec.ip_bytes("10.77.0.1"), codec.ip_bytes("10.77.0.2")}  # ours, dnsmasq
        pkts = dhcp_packets_when(lab.pcap, lambda ps: servers <= {p.server_id for p in ps if p.op == 2})
        ours = [p for p in pkts if p.op == 2 and p.server_id == codec.ip_bytes("10.77.0.1")]
        theirs = [p for p in pkts if p.op == 2 and p.server_id == codec.ip_bytes("10.77.0.2")]
        assert ours and all(p.yiaddr == b"\0\0\0\0" for p in ours)  # boot info, never an address
        assert all(p.file == f"http://10.77.0.1:8081/boot/{mac}.ipxe".encode() for p in ours)
        assert theirs and theirs[0].yiaddr != b"\0\0\0\0" and theirs[0].file == b""
        assert mac in other.leases.read_text()
        c = sqlite3.connect(tmp_path / "state" / "nixie.db")
        assert c.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
        c.close()

