"""PXE-boot QEMU machines from our TFTP and HTTP boot servers, to the initrd's init.

One namespace holds a bridge, dnsmasq (DHCP only: --port=0, no TFTP), our TFTP
server, our HTTP boot server over a file-backed backend (a real Debian kernel,
a busybox initramfs built here as two concatenated newc archives, so the initrd
is served as two segments) and the VM's tap device.

- BIOS: SeaBIOS runs the NIC's iPXE ROM, which asks DHCP with user-class iPXE,
  gets our script URL, and fetches the kernel and initrd over HTTP.
- UEFI: OVMF's own PXE client (empty romfile) fetches snponly.efi over our
  TFTP, then iPXE asks DHCP again and continues over HTTP.

The host has two generations, so iPXE runs the boot menu script and boots
the newest after the timeout. The init prints a marker on the serial console, brings up the network and
reports `booted` to the agent API with the token from its kernel command line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.netns import Netns, bridge, stop_processes, wait_port
from lab.qemu import PxeVM
from tests.bootlab import store_basename
from tests.conftest import ROOT

SERVER = "10.70.0.1"
BASE = f"http://{SERVER}:8081"
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "failover", "net_failover", "virtio_net")
HOSTS = {"bios": ("52:54:00:4e:00:01", 11), "uefi": ("52:54:00:4e:00:02", 12)}

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "NIXIE-INIT-REACHED"
tok=$(sed -n 's/.*nixie\.token=\([^ ]*\).*/\1/p' /proc/cmdline)
api=$(sed -n 's/.*nixie\.api=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$tok" ] && echo "NIXIE-TOKEN-PRESENT"
for m in %(modules)s; do insmod /lib/nixie-mod/$m.ko 2>/dev/null; done
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -s /bin/nixie-dhcp.sh
wget -q -O - --header "Authorization: Bearer $tok" --header "Content-Type: application/json" \
  --post-data '{"event": "booted", "message": "busybox init"}' "$api/api/v1/agent/events" \
  && echo "NIXIE-AGENT-OK"
poweroff -f
"""

DHCP_SCRIPT = """#!/bin/sh
case "$1" in bound|renew) ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" ;; esac
"""


def newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc CPIO archive of (name, mode, data) entries, with its trailer."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_initrd(kernel_dir: Path, dest: Path) -> list[Path]:
    """Two archives: the busybox system, then the NIC modules (the kernel unpacks both)."""
    d, f, x = 0o040755, 0o100644, 0o100755
    base = [(p, d, b"") for p in ("bin", "proc", "sys", "dev", "lib", "lib/nixie-mod", "sbin")]
    base += [("init", x, (INIT % {"modules": " ".join(MODULES)}).encode()),
             ("bin/busybox", x, Path("/bin/busybox").read_bytes()),
             ("bin/nixie-dhcp.sh", x, DHCP_SCRIPT.encode())]
    version = (kernel_dir / "version").read_text().split()[0]
    mods = []
    for m in MODULES:
        hits = list((kernel_dir / "lib/modules" / version).rglob(f"{m}.ko"))
        if hits:
            mods.append((f"lib/nixie-mod/{m}.ko", f, hits[0].read_bytes()))
    parts = [dest / "initrd.base", dest / "initrd.modules"]
    parts[0].write_bytes(newc(base))
    parts[1].write_bytes(newc(mods))
    return parts


@pytest.fixture(scope="module")
def pxe_lab(tmp_path_factory):
    r = subprocess.run(["bash", str(ROOT / "scripts/fetch-lab-kernel.sh")], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"no lab kernel: {r.stderr.strip()[-200:]}")
    kernel_dir = Path(r.stdout.strip().splitlines()[-1])
    work = tmp_path_factory.mktemp("pxe")
    work.chmod(0o755)
    parts = build_initrd(kernel_dir, work)
    b, old = store_basename("nixos-system-pxe-2"), store_basename("nixos-system-pxe-1")
    system = {"kernel": str(kernel_dir / "vmlinuz"), "initrd": [str(p) for p in parts],
              "params": ["console=ttyS0", "panic=-1"]}
    # two generations: the boot menu (2 s timeout) picks the newest by default
    spec = {"hosts": [{"name": name, "id": hid, "macs": [mac], "targets": [b, old]}
                      for name, (mac, hid) in HOSTS.items()],
            "systems": {b: {**system, "label": "generation 2"},
                        old: {**system, "label": "generation 1"}}}
    (work / "spec.json").write_text(json.dumps(spec))
    tftp_root = work / "tftp"
    events = work / "events.jsonl"
    ns = Netns()
    procs: list[subprocess.Popen] = []
    try:
        bridge(ns, "br0", f"{SERVER}/24")
        logs = {n: open(work / f"{n}.log", "w") for n in ("dnsmasq", "tftp", "http")}
        # TFTP as seen on the wire: what the firmware asked for and what we acknowledged
        procs.append(ns.popen("tcpdump", "-i", "br0", "-U", "-n", "-w", str(work / "tftp.pcap"),
                              "udp and not port 67 and not port 68", stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL))
        procs.append(ns.popen(
            "dnsmasq", "--no-daemon", "--port=0", "--user=root", "--interface=br0",
            "--bind-interfaces", "--dhcp-range=10.70.0.100,10.70.0.150,255.255.255.0,1h",
            f"--dhcp-leasefile={work}/leases", f"--pid-file={work}/dnsmasq.pid",
            "--dhcp-userclass=set:ipxe,iPXE",
            *[f"--dhcp-host={mac},set:{name}" for name, (mac, _) in HOSTS.items()],
            *[f"--dhcp-boot=tag:ipxe,tag:{name},{BASE}/boot/{mac}.ipxe"
              for name, (mac, _) in HOSTS.items()],
            f"--dhcp-boot=tag:!ipxe,snponly.efi,,{SERVER}",
            "--log-dhcp", stdout=logs["dnsmasq"], stderr=subprocess.STDOUT))
        procs.append(ns.popen(sys.executable, "-m", "netservices.tftp", "--root", str(tftp_root),
                              "--listen", f"{SERVER}:69", "--ipxe-dir", "/usr/lib/ipxe",
                              "--events", str(work / "tftp-events.jsonl"),
                              cwd=ROOT, stdout=logs["tftp"], stderr=subprocess.STDOUT))
        procs.append(ns.popen(sys.executable, "-m", "tests.bootlab", "--spec",
                              str(work / "spec.json"), "--listen", f"{SERVER}:8081",
                              "--base-url", BASE, "--tftp-root", str(tftp_root),
                              "--events", str(events), "--menu", cwd=ROOT, stdout=logs["http"],
                              stderr=subprocess.STDOUT))
        assert wait_port(ns, SERVER, 8081, timeout=30), (work / "http.log").read_text()
        yield {"ns": ns, "work": work, "events": events, "toplevel": "/nix/store/" + b}
    finally:
        stop_processes(procs)
        ns.close()


def boot_vm(lab, firmware: str, timeout: float = 240) -> str:
    """Boot one VM until its init powers it off (or timeout); returns the serial log."""
    ns, work = lab["ns"], lab["work"]
    mac, _ = HOSTS[firmware]
    with PxeVM(ns, "br0", firmware, mac, work, memory_mb=512) as vm:
        vm.wait_for("NIXIE-AGENT-OK", "Kernel panic", timeout=timeout)
        try:
            vm.proc.wait(15)  # init powers off after its report
        except subprocess.TimeoutExpired:
            pass
    return vm.console()


def tftp_on_the_wire(lab) -> list[str]:
    """The lab's TFTP packets, decoded by tcpdump (-T tftp: transfers use other ports)."""
    r = subprocess.run(["tcpdump", "-n", "-r", str(lab["work"] / "tftp.pcap"), "-T", "tftp"],
                       capture_output=True, text=True)
    return r.stdout.splitlines()


def events_for(lab, host_id: int) -> list[dict]:
    lines = lab["events"].read_text().splitlines() if lab["events"].exists() else []
    return [e for e in map(json.loads, lines) if e.get("host_id") == host_id]


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_pxe_boot_reaches_init_and_phones_home(pxe_lab, firmware):
    log = boot_vm(pxe_lab, firmware)
    tail = log[-3000:]
    assert "NIXIE-INIT-REACHED" in log, tail
    assert "NIXIE-TOKEN-PRESENT" in log, tail
    assert "NIXIE-AGENT-OK" in log, tail
    mac, host_id = HOSTS[firmware]
    kinds = [(e["kind"], (e.get("data") or {}).get("status")) for e in events_for(pxe_lab, host_id)]
    assert ("boot.kernel", "completed") in kinds and ("boot.initrd", "completed") in kinds, kinds
    assert ("agent.booted", None) in kinds, kinds
    evs = events_for(pxe_lab, host_id)
    script = next(e for e in evs if e["kind"] == "boot.script")
    assert script["data"]["script"] == "menu" and script["mac"] == mac
    kernel = next(e for e in evs if e["kind"] == "boot.kernel")
    assert kernel["data"]["toplevel"] == pxe_lab["toplevel"]  # the menu's default: newest
    if firmware == "uefi":  # firmware PXE fetched iPXE from our TFTP server first
        path = pxe_lab["work"] / "tftp-events.jsonl"
        tftp = [json.loads(line) for line in path.read_text().splitlines()]
        assert any(e["kind"] == "boot.tftp" and e["data"]["file"] == "snponly.efi"
                   and e["data"]["status"] == "sent" for e in tftp), tftp
        # EDK2's Mtftp4 asks for windowsize (RFC 7440): we granted more than 1 and the
        # firmware acknowledged once per window, not once per block
        wire = tftp_on_the_wire(pxe_lab)
        oacks = [line for line in wire if f"IP {SERVER}." in line and " OACK " in line]
        granted = [int(w) for line in oacks for w in re.findall(r"windowsize (\d+)", line)]
        assert granted and min(granted) > 1, oacks or wire[:20]
        data = sum(1 for line in wire if f"IP {SERVER}." in line and " DATA block " in line)
        acks = sum(1 for line in wire if f"> {SERVER}." in line and " ACK block " in line)
        assert data > 2 * acks > 0, (data, acks)
