"""A PXE lab in one namespace: a LAN bridge, tftp-hpa, an HTTP server that records
requests, and a QEMU VM on a tap device (BIOS with the iPXE ROM, or OVMF with
the firmware's own PXE client), started by `lab.qemu.PxeVM`."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from appliance.config.schema import example_config
from lab import flake as labflake
from lab.netns import Netns, bridge, bridge_port, serving, stop_processes
from lab.qemu import PxeVM
from tests.conftest import run_nixie
from tests.nixlab import NIX_EXTRA

HTTP_RECORDER = r'''
import http.server, sys, urllib.parse
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(urllib.parse.unquote(self.path) + "\n")  # iPXE sends ':' as %3A
        body = b"#!ipxe\necho nixie test script\n"
        self.send_response(404 if not self.path.startswith("/boot/") else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], 8081), H).serve_forever()
'''


class PxeLab:
    def __init__(self, tmp: Path, ns: Netns, lan_ip: str = "10.77.0.1"):
        self.tmp = tmp
        self.ns = ns
        self.lan_ip = lan_ip
        self.procs: list[subprocess.Popen] = []
        self.vms: list[PxeVM] = []
        # tftp-hpa drops privileges: its root must be readable by everyone
        self.tftp_root = Path(tempfile.mkdtemp(prefix="nixie-tftp-"))
        os.chmod(self.tftp_root, 0o755)
        for name in ("undionly.kpxe", "snponly.efi"):
            shutil.copy(f"/usr/lib/ipxe/{name}", self.tftp_root / name)
            os.chmod(self.tftp_root / name, 0o644)
        self.http_log = tmp / "http.log"
        self.http_log.touch()
        self.pcap = tmp / "lan.pcap"

    def spawn(self, *cmd: str, log: str) -> subprocess.Popen:
        p = self.ns.popen(*cmd, stdout=open(self.tmp / log, "w"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start_services(self) -> None:
        # --immediate-mode: each packet is written as it comes (not a buffer's worth a
        # second later), so a boot that fetches its script at once finds its DHCP in the file
        self.spawn("tcpdump", "-i", "br-lan", "--immediate-mode", "-U", "-w", str(self.pcap),
                   "udp port 67 or udp port 68 or udp port 69 or udp port 4011", log="tcpdump.log")
        self.spawn("in.tftpd", "-L", "-u", "root", "-a", f"{self.lan_ip}:69", "-s", str(self.tftp_root),
                   log="tftpd.log")
        script = self.tmp / "http_recorder.py"
        script.write_text(HTTP_RECORDER)
        self.spawn(sys.executable, str(script), self.lan_ip, str(self.http_log), log="http.out")

    def start_vm(self, mac: str, *, uefi: bool) -> PxeVM:
        vm = PxeVM(self.ns, "br-lan", "uefi" if uefi else "bios", mac, self.tmp, memory_mb=256)
        self.vms.append(vm)
        return vm.start()

    def wait_http(self, path: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.http_log.read_text().splitlines()
            if path in lines:
                return lines
            time.sleep(0.5)
        return self.http_log.read_text().splitlines()

    def close(self) -> None:
        for vm in self.vms:
            vm.stop()
        stop_processes(reversed(self.procs))
        shutil.rmtree(self.tftp_root, ignore_errors=True)


def router_namespace(lan_ip: str = "10.77.0.1") -> Netns:
    ns = Netns()
    bridge(ns, "br-lan", f"{lan_ip}/24")
    return ns


class OtherDhcpServer:
    """The LAN's existing DHCP server for proxy-mode tests: dnsmasq handing out
    addresses only (no PXE options), in its own namespace at 10.77.0.2 wired into
    the LAN bridge of `lan` (ours and dnsmasq cannot share port 67 in one
    namespace). `leases` is dnsmasq's lease file. Another segment's plain DHCP server
    (routed boot): `bridge_name`, `address` and the `gateway` (option 3) it hands out."""

    def __init__(self, lan: Netns, tmp: Path, pool: tuple[str, str], *, bridge_name: str = "br-lan",
                 address: str = "10.77.0.2/24", gateway: str | None = None,
                 extra: tuple[str, ...] = ()):
        self.ns = Netns()
        self.leases = tmp / "dnsmasq.leases"
        self.log = tmp / "dnsmasq.log"
        try:
            bridge_port(lan, bridge_name, "vd0", self.ns, "d0", address=address)
            self.proc = self.ns.popen(
                "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=d0",
                "--bind-interfaces", "--no-ping", f"--dhcp-range={pool[0]},{pool[1]},10m",
                *([f"--dhcp-option=3,{gateway}"] if gateway else []), *extra,
                f"--dhcp-leasefile={self.leases}", "--pid-file=", "--user=root", "--group=root",
                stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        except BaseException:
            self.ns.close()
            raise

    def close(self) -> None:
        stop_processes([self.proc], timeout=5)
        self.ns.close()

    def __enter__(self) -> OtherDhcpServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def vm_config(state_dir: Path, builder: dict | None = None) -> dict:
    """The appliance's config for a VM test on `br-lan`: no DNS, the offline `nix`, a
    1 s boot menu; `builder` adds a builder section."""
    cfg = example_config(state_dir=str(state_dir), interface="br-lan")
    cfg["dns"]["enable"] = False
    cfg["nix"] = {"extra_config": NIX_EXTRA}
    cfg["boot"]["menu_timeout_seconds"] = 1
    if builder is not None:
        cfg["builder"] = builder
    return cfg


MANUAL_BUILDER = {"kind": "local", "flake_refresh_seconds": 0, "flake_policy": "manual"}


@contextmanager
def appliance_serving(tmp_path: Path, lan_ip: str = "10.77.0.1", sections: dict | None = None,
                      builder: dict | None = None):
    """`nixie serve` (our DHCP, TFTP, HTTP boot and a local build worker on the
    real `nix`) in a namespace with its LAN bridge; yields (ns, config path, config).
    `sections`: config sections to set besides (e.g. {"bmc": {"poll_seconds": 2}});
    `builder` overrides builder keys (flakes are manual unless it says otherwise)."""
    cfg = vm_config(tmp_path / "state", {**MANUAL_BUILDER, **(builder or {})})
    cfg.update(sections or {})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with router_namespace(lan_ip) as ns:
        with serving(ns, path, tmp_path / "serve.log", [(lan_ip, 8081)], timeout=30):
            yield ns, path, cfg


def ipv6_neighbours(ns: Netns, macs, timeout: float = 30, bridge_name: str = "br-lan"
                    ) -> tuple[ipaddress.IPv6Network, dict[str, set]]:
    """What the router's namespace sees of the LAN over IPv6: (the LAN prefix, MAC ->
    addresses in it). It pings all-nodes from its own address in the prefix (each host
    answers from its address there), pings each answering address so the kernel
    resolves its MAC, and reads the neighbour table; until each of `macs` is seen or
    `timeout` passes (a host that just booted may still be on DAD)."""
    addrs = json.loads(ns.run("ip", "-j", "-6", "addr", "show", "dev", bridge_name, "scope", "global").stdout)
    info = next(a for link in addrs for a in link["addr_info"] if a["family"] == "inet6")
    prefix = ipaddress.IPv6Interface(f"{info['local']}/{info['prefixlen']}").network
    deadline = time.monotonic() + timeout
    while True:
        out = ns.run("ping", "-6", "-n", "-c", "3", "-i", "0.3", "-w", "2", "-I", info["local"],
                     "ff02::1%" + bridge_name, check=False).stdout
        answered = {w.rstrip(":") for line in out.splitlines() if " from " in line
                    for w in line.split()[3:4]}
        for a in answered:
            if a != info["local"] and ipaddress.IPv6Address(a) in prefix:
                ns.run("ping", "-6", "-n", "-c", "1", "-w", "1", a, check=False)
        found: dict[str, set] = {}
        for n in json.loads(ns.run("ip", "-j", "-6", "neigh", "show", "dev", bridge_name).stdout):
            ip, mac = ipaddress.IPv6Address(n["dst"]), n.get("lladdr")
            if mac and ip in prefix:
                found.setdefault(mac.lower(), set()).add(ip)
        if all(m in found for m in macs) or time.monotonic() >= deadline:
            return prefix, found


def build(cfg_path: Path, name: str) -> dict:
    """`nixie build NAME --wait --json`: the finished build as the CLI reports it
    (the command must succeed; the build itself may have failed)."""
    r = run_nixie("build", name, "--wait", "--timeout", "300", "--json", config=cfg_path,
                  timeout=320)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def add_and_build(cfg_path: Path, flake: Path, hosts: dict[str, str]) -> None:
    """Add `flake` and each host (name -> MAC) on it, and build each; every step
    must succeed."""
    assert run_nixie("flake", "add", str(flake), config=cfg_path).returncode == 0
    for name, mac in hosts.items():
        r = run_nixie("host", "add", name, "--mac", mac, "--flake", str(flake), config=cfg_path)
        assert r.returncode == 0, r.stderr
        assert build(cfg_path, name)["status"] == "succeeded"


def wait_booted(cfg_path: Path, names, timeout: float, give_up=lambda: False) -> dict[str, dict]:
    """Each of `names`' host record (`host show`) once all are booted, `timeout`
    has passed or `give_up()` (e.g. the VM exited) says so."""
    deadline = time.monotonic() + timeout
    while True:
        hosts = {n: json.loads(run_nixie("host", "show", n, "--json", config=cfg_path).stdout)
                 for n in names}
        if (all(h["state"] == "booted" for h in hosts.values()) or give_up()
                or time.monotonic() >= deadline):
            return hosts
        time.sleep(2)


def boot_captured(ns: Netns, cfg_path: Path, tmp: Path, mac: str, *, netboot: str, capture: str,
                  timeout: float) -> tuple[dict, str, Path]:
    """The lab flake (a fresh release) built for host `demo` at `mac`, then a UEFI VM
    booting it (`netboot`: lab.qemu's) while tcpdump writes the LAN's `capture` filter to
    a pcap; waits until demo is booted (or the VM exits, or `timeout`). Returns (demo's
    host record, the VM's console, the pcap). The VM and the capture are stopped
    whatever happens."""
    flake = labflake.materialise(tmp / "flake", release=f"{netboot} {uuid.uuid4()}")
    add_and_build(cfg_path, flake, {"demo": mac})
    pcap = tmp / "lan.pcap"
    vm = PxeVM(ns, "br-lan", "uefi", mac, tmp / "vms", netboot=netboot)
    proc = ns.popen("tcpdump", "-i", "br-lan", "-U", "-n", "-w", str(pcap), capture,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)  # let tcpdump open the bridge before the firmware speaks
        vm.start()
        host = wait_booted(cfg_path, ["demo"], timeout,
                           give_up=lambda: vm.proc.poll() is not None)["demo"]
        return host, vm.console(), pcap
    finally:
        vm.stop()
        stop_processes([proc])
