"""Power-on to `booted`: the appliance vs dnsmasq + nginx, same VM, same artifacts.

One run, two namespaces with the same LAN (br-lan, 10.77.0.1/24):
- ours: `nixie serve` (our DHCP authoritative, TFTP, HTTP boot, agent API) with
  a generation its build worker built with the real `nix` from the lab flake;
- reference: dnsmasq (DHCP + TFTP, no DNS) and nginx (HTTP) serving the SAME
  artifacts exported once from ours: the host's iPXE script (fetched from our
  HTTP boot, so the same kernel command line with a valid `nixie.token` issued
  by the appliance), the kernel and the initrd image byte for byte. nginx also
  answers the agent's POST on the same URL (`nixie.api` is unchanged), so
  "booted" is the same event in both: the agent's POST arriving at the server.

The same VM (BIOS: SeaBIOS -> the NIC's iPXE ROM; UEFI: OVMF's PXE -> TFTP
snponly.efi -> iPXE) boots alternately from each stack, ROUNDS times per
firmware; the stack not being measured is frozen (SIGSTOP) so it takes no CPU
from the TCG guest. Step times, relative to QEMU's start: DHCP ACKs and TFTP
read requests from tcpdump on the bridge (same instrument for both); script,
kernel, initrd and booted from our host events (`nixie host show --json`:
`boot.script`, completed `boot.kernel`/`boot.initrd`, `host.booted`) and from
nginx's access log ($msec, logged when a request completes); stage 1 / stage 2
from the serial console, polled every 50 ms for both. dnsmasq's own log
(--log-dhcp) is kept for diagnosis. Prints, per firmware, the median power-on
-> booted of each stack, the ratio ours/reference (target <= 1.05) and a
per-step table.

Env: BENCH_BOOT_ROUNDS (default 3), BENCH_BOOT_FIRMWARES (default "bios uefi"),
BENCH_BOOT_TIMEOUT (per boot, default 240 s), BENCH_BOOT_DEBUG=1 (raw steps),
BENCH_BOOT_KEEP=1 (keep the temp dir: consoles, captures, logs), BENCH_BOOT_STACKS
(default "ours reference reference-ra": the third is the reference with dnsmasq's
router advertisements, `--enable-ra` with an ra-only ULA /64; ours is compared with
each), BENCH_BOOT_OURS_RA=0 (ours with ra.enable false, the boot before RAs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from appliance.config.schema import example_config
from appliance.nix.command import SINGLE_USER_OFFLINE
from lab import flake as labflake
from lab.netns import Netns, bridge, wait_port
from lab.qemu import PxeVM

from .steps import (
    CONSOLE_MARKERS,
    NGINX_LOG_FORMAT,
    BootTimes,
    FirstSeen,
    appliance_steps,
    median_or_none,
    parse_event_data,
    parse_nginx_log,
    parse_tcpdump,
    phase_table,
    ratio,
    reference_steps,
    step_table,
    wire_steps,
)

ROOT = Path(__file__).resolve().parents[2]
HOST, MAC = "demo", "52:54:00:4e:58:21"
ROUTER = "10.77.0.1"
PORT = 8081
ROUNDS = int(os.environ.get("BENCH_BOOT_ROUNDS", "3"))
BOOT_TIMEOUT = float(os.environ.get("BENCH_BOOT_TIMEOUT", "240"))
FIRMWARES = os.environ.get("BENCH_BOOT_FIRMWARES", "bios uefi").split()
TARGET = 1.05
IPXE_DIR = Path("/usr/lib/ipxe")
ULA_PREFIX = "fd4e:6978:6965::"  # the RA reference's /64, on its bridge
# the stacks each firmware boots from, in turn: ours, dnsmasq + nginx, and the same
# with dnsmasq's router advertisements
STACKS = os.environ.get("BENCH_BOOT_STACKS", "ours reference reference-ra").split()
# BENCH_BOOT_OURS_RA=0: ours without router advertisements (the boot before ra.enable)
OURS_RA = os.environ.get("BENCH_BOOT_OURS_RA", "1") != "0"


def nixie(cfg_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "appliance.cli.main", *args, "--config", str(cfg_path)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def check(r: subprocess.CompletedProcess, what: str) -> str:
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {r.stdout[-1500:]}{r.stderr[-1500:]}")
    return r.stdout


class Poller:
    """Reads the VM console every 50 ms and notes when each marker first
    appeared; the same for both stacks."""

    def __init__(self, vm: PxeVM):
        self.vm = vm
        self.console = FirstSeen({m: re.escape(m) for m in CONSOLE_MARKERS})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            self.console.feed(self.vm.console(), now)
            self.stop.wait(0.05)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(2)


def boot_once(ns: Netns, workdir: Path, firmware: str) -> tuple[float, Poller, str, list]:
    """Power the VM on, wait for NIXIE-REPORTED on its console; returns power-on
    time, the poller (its first-seen times), the end of the console and the DHCP
    packets tcpdump saw on the bridge."""
    workdir.mkdir(parents=True, exist_ok=True)
    vm = PxeVM(ns, "br-lan", firmware, MAC, workdir, memory_mb=768)
    vm.serial.unlink(missing_ok=True)  # the poller must not see a previous boot's console
    cap_path = workdir / "dhcp.txt"
    with open(cap_path, "w") as out:
        # DHCP for the steps; ARP, ICMPv6, TFTP and TCP handshakes to read a slow boot
        cap = ns.popen("tcpdump", "-i", "br-lan", "-n", "-tt", "-v", "-l",
                       "udp or arp or icmp6 or (tcp[tcpflags] & tcp-syn != 0)",
                       stdout=out, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # tcpdump is listening
        poller = Poller(vm)
        with poller:
            power_on = time.time()
            vm.start()
            deadline = time.monotonic() + BOOT_TIMEOUT
            while time.monotonic() < deadline and "NIXIE-REPORTED" not in poller.console.first:
                if vm.proc is not None and vm.proc.poll() is not None:
                    break
                time.sleep(0.1)
            time.sleep(0.3)  # let the server log the POST
        tail = vm.console()[-1500:]
    finally:
        vm.stop()
        cap.terminate()
        try:
            cap.wait(5)
        except subprocess.TimeoutExpired:
            cap.kill()
            cap.wait()
    if os.environ.get("BENCH_BOOT_DEBUG"):
        print(f"  power-on {power_on:.3f} console {poller.console.first}", flush=True)
    return power_on, poller, tail, parse_tcpdump(cap_path.read_text())


def freeze(procs: list[subprocess.Popen], frozen: bool) -> None:
    """Stop (or continue) a stack's process groups, so the stack that is not
    being measured takes no CPU from the one that is (TCG is CPU-bound)."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
            except ProcessLookupError:
                pass


class Ours:
    """`nixie serve` in its namespace, the lab flake added, the host built."""

    def __init__(self, tmp: Path):
        self.tmp = tmp / "ours"
        self.tmp.mkdir()
        cfg = example_config(state_dir=str(self.tmp / "state"), interface="br-lan")
        cfg["dns"]["enable"] = False
        cfg["nix"] = {"extra_config": SINGLE_USER_OFFLINE}
        cfg["builder"] = {"kind": "local", "flake_refresh_seconds": 0, "flake_policy": "manual"}
        cfg["boot"]["menu_timeout_seconds"] = 0  # the same one-target script as the reference
        cfg["ra"] = {"enable": OURS_RA}
        self.cfg = cfg
        self.cfg_path = self.tmp / "config.json"
        self.cfg_path.write_text(json.dumps(cfg))
        self.ns: Netns | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.ns = Netns()
        bridge(self.ns, "br-lan", f"{ROUTER}/24")
        log = open(self.tmp / "serve.log", "w")
        self.proc = self.ns.popen(sys.executable, "-m", "appliance.cli.main", "serve", "--config",
                                  str(self.cfg_path), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if not wait_port(self.ns, ROUTER, PORT, timeout=60):
            raise RuntimeError("nixie serve did not listen:\n" + (self.tmp / "serve.log").read_text())

    def build(self) -> None:
        flake = labflake.materialise(self.tmp / "flake", release="bench boot")
        check(nixie(self.cfg_path, "flake", "add", str(flake)), "flake add")
        check(nixie(self.cfg_path, "host", "add", HOST, "--mac", MAC, "--flake", str(flake)),
              "host add")
        out = check(nixie(self.cfg_path, "build", HOST, "--wait", "--timeout", "400", "--json",
                          timeout=420), "build")
        if json.loads(out)["status"] != "succeeded":
            raise RuntimeError(f"build: {out}")

    def export(self, dest: Path) -> tuple[str, str]:
        """The host's script, kernel and initrd as our HTTP boot serves them, into
        dest/boot/...; returns (script text, toplevel basename)."""
        base = f"http://{ROUTER}:{PORT}"
        deadline = time.monotonic() + 300
        while True:  # the initrd may still be assembling: the script says "retry" until then
            script = self.ns.run("curl", "-sfS", f"{base}/boot/{MAC}.ipxe").stdout
            if "nixie.token=" in script or time.monotonic() > deadline:
                break
            time.sleep(2)
        m = re.search(r"/boot/([0-9a-z]{32}-[^/\s]+)/kernel ", script)
        if not m or "nixie.token=" not in script:
            raise RuntimeError(f"unexpected boot script:\n{script}")
        b = m[1]
        (dest / "boot" / b).mkdir(parents=True)
        for name in ("kernel", "initrd"):
            self.ns.run("curl", "-sfS", "-o", str(dest / "boot" / b / name),
                        f"{base}/boot/{b}/{name}", timeout=300)
        (dest / "boot" / f"{MAC}.ipxe").write_text(script)
        return script, b

    @property
    def procs(self) -> list[subprocess.Popen]:
        return [self.proc] if self.proc is not None else []

    def events(self) -> list[dict]:
        out = check(nixie(self.cfg_path, "host", "show", HOST, "--json"), "host show")
        return [parse_event_data(e) for e in json.loads(out).get("events", [])]

    def stop(self) -> None:
        freeze(self.procs, False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.ns is not None:
            self.ns.close()


NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  log_format bench '{fmt}';
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  server {{
    listen {addr}:{port};
    root {root};
    access_log {tmp}/access.log bench;
    location = /api/v1/agent/events {{
      default_type application/json;
      return 200 '{{"ok": true}}';
    }}
    location /boot/ {{ }}
  }}
}}
"""


class Reference:
    """dnsmasq (DHCP + TFTP) and nginx (HTTP) in their own namespace. With `ra`, dnsmasq
    also sends router advertisements (`--enable-ra`, an `ra-only` range: SLAAC, no
    DHCPv6) for a ULA /64 on the bridge, as a LAN with an IPv6 router has."""

    def __init__(self, tmp: Path, name: str = "reference", *, ra: bool = False,
                 www: Path | None = None):
        self.name = name
        self.ra = ra
        self.tmp = tmp / name
        self.www = www or self.tmp / "www"
        self.tftp = self.tmp / "tftp"
        self.www.mkdir(parents=True, exist_ok=True)
        self.tftp.mkdir(parents=True)
        self.dhcp_log = self.tmp / "dnsmasq.log"
        self.ns: Netns | None = None
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        for name in ("undionly.kpxe", "snponly.efi"):
            shutil.copyfile(IPXE_DIR / name, self.tftp / name)
        for p in [self.tmp, *self.tmp.rglob("*"), self.www, *self.www.rglob("*")]:  # nginx: nobody
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        self.ns = Netns()
        bridge(self.ns, "br-lan", f"{ROUTER}/24")
        ra_args: list[str] = []
        if self.ra:
            self.ns.run("ip", "-6", "addr", "add", f"{ULA_PREFIX}1/64", "dev", "br-lan", "nodad")
            ra_args = ["--enable-ra", f"--dhcp-range={ULA_PREFIX},ra-only,64"]
        conf = self.tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=self.tmp, fmt=NGINX_LOG_FORMAT, addr=ROUTER,
                                          port=PORT, root=self.www))
        err = open(self.tmp / "daemons.err", "w")
        self.procs.append(self.ns.popen("nginx", "-e", str(self.tmp / "nginx-error.log"),
                                        "-c", str(conf), "-g", "daemon off;",
                                        stdout=subprocess.DEVNULL, stderr=err))
        script_url = f"http://{ROUTER}:{PORT}/boot/{MAC}.ipxe"
        self.procs.append(self.ns.popen(
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--user=root", "--interface=br-lan", "--bind-interfaces",
            f"--pid-file={self.tmp}/dnsmasq.pid", f"--dhcp-leasefile={self.tmp}/dnsmasq.leases",
            "--dhcp-range=10.77.0.100,10.77.0.200,255.255.255.0,1h", "--dhcp-authoritative",
            "--log-dhcp", f"--log-facility={self.dhcp_log}",
            "--enable-tftp", f"--tftp-root={self.tftp}",
            "--dhcp-userclass=set:ipxe,iPXE", "--dhcp-match=set:ipxe,175",
            "--dhcp-match=set:efi64,option:client-arch,7",
            f"--dhcp-boot=tag:ipxe,{script_url}",
            "--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi",
            "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe", *ra_args,
            stdout=subprocess.DEVNULL, stderr=err))
        if not wait_port(self.ns, ROUTER, PORT, timeout=15):
            raise RuntimeError("nginx did not listen: " + (self.tmp / "nginx-error.log").read_text())
        time.sleep(0.5)
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError("a reference daemon exited: " + (self.tmp / "daemons.err").read_text())

    def requests(self):
        log = self.tmp / "access.log"
        return parse_nginx_log(log.read_text()) if log.exists() else []

    def stop(self) -> None:
        freeze(self.procs, False)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.ns is not None:
            self.ns.close()


def fmt(v: float | None) -> str:
    return f"{v:.2f} s" if v is not None else "-"


def main() -> int:
    if os.geteuid() != 0:
        print("bench/boot needs root (namespaces, taps)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="nixie-bench-boot-"))
    os.chmod(tmp, 0o711)  # mkdtemp is 700; nginx's workers (nobody) must traverse it
    ours = Ours(tmp)
    www = tmp / "www"
    refs = {name: Reference(tmp, name, ra=name.endswith("-ra"), www=www)
            for name in STACKS if name != "ours"}
    stacks: dict[str, Ours | Reference] = {"ours": ours, **refs}
    boots: list[BootTimes] = []

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        t0 = time.monotonic()
        ours.start()
        ours.build()
        script, basename = ours.export(www)
        size = (www / "boot" / basename / "initrd").stat().st_size
        print(f"generation {basename} built and exported in {time.monotonic() - t0:.0f} s "
              f"(initrd {size / 1e6:.1f} MB); ours with ra.enable {OURS_RA}", flush=True)
        for ref in refs.values():
            ref.start()
        for i in range(ROUNDS):
            for fw in FIRMWARES:
                for stack in STACKS:
                    me = stacks[stack]
                    for other in stacks.values():
                        if other is not me:
                            freeze(other.procs, True)
                    freeze(me.procs, False)
                    power_on, poll, tail, dhcp = boot_once(me.ns, tmp / f"vm-{stack}-{fw}-{i}", fw)
                    if stack == "ours":
                        steps = appliance_steps(ours.events(), power_on)
                    else:
                        steps = reference_steps(refs[stack].requests(), power_on, basename)
                    steps.update(wire_steps(dhcp, power_on))
                    steps["stage1"] = poll.console.first.get("NIXIE-STAGE1")
                    steps["stage2"] = poll.console.first.get("NIXIE-STAGE2")
                    b = BootTimes(stack, power_on, steps, firmware=fw)
                    boots.append(b)
                    if os.environ.get("BENCH_BOOT_DEBUG"):
                        print(f"  {stack} steps: "
                              f"{ {k: v and round(v - power_on, 2) for k, v in steps.items()} }")
                    print(f"round {i + 1} {fw:<4} {stack:<12} power-on -> booted {fmt(b.total)}",
                          flush=True)
                    if b.total is None:
                        print(f"  no booted; console ends with:\n{tail}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; cleaning up", flush=True)
    finally:
        for ref in refs.values():
            ref.stop()
        ours.stop()
        if os.environ.get("BENCH_BOOT_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")

    return report(boots, list(refs)) if boots else 1


def report(boots: list[BootTimes], refs: list[str]) -> int:
    """Per firmware: the step table, the phases against each reference and the ratios;
    1 if a boot did not finish."""
    rc = 0
    for fw in FIRMWARES:
        mine = [b for b in boots if b.firmware == fw]
        o = median_or_none([b.total for b in mine if b.stack == "ours"])
        print()
        print(f"{fw.upper()} VM (TCG), median of {ROUNDS} boots per stack "
              f"(ours with ra.enable {OURS_RA})")
        print(step_table(mine))
        for name in refs:
            print()
            print(phase_table(mine, name))
        for name in refs:
            r = median_or_none([b.total for b in mine if b.stack == name])
            print(f"power-on -> booted: ours {fmt(o)}, {name} {fmt(r)}")
            q = ratio(o, r)
            if q is None:
                print(f"ratio ours/{name}: - (a boot did not finish)")
                rc = 1
                continue
            target = 1.0 if name.endswith("-ra") else TARGET
            print(f"ratio ours/{name}: {q:.3f} (target <= {target}) "
                  f"{'OK' if q <= target else 'ABOVE TARGET'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
