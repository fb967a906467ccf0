"""TFTP: ours vs tftp-hpa serving ipxe.efi to curl clients, 1 and 20 at once,
blksize 512 and 1468, over a veth pair between two namespaces.

`python -m bench.tftp.run [--seconds S]` prints MB/s for each and the ratio, each
server's CPU time per DATA packet (steadier than MB/s on a shared machine) and
the load average. Ours runs as `nixie serve` runs it: one worker per two CPUs,
busy polling for the default time.

Two placements, because here the clients run on the server's machine:
- `split`: the server may use only the first half of the CPUs and the clients only
  the rest, as on a LAN, where every client is a machine of its own and never
  takes a core from the server;
- `shared`: server and clients share every CPU as the scheduler likes. With
  20 lock-step curls on two cores this rewards a process per transfer (tftp-hpa
  forks one): each fork and its curl wake each other on one core, while one
  worker serving 20 curls wakes some of them on the other core."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import fetch_loops, server_and_client
from lab.netns import Netns, stop_processes

ROOT = Path(__file__).resolve().parents[2]
FILE = Path("/usr/lib/ipxe/ipxe.efi")
SERVER_IP, CLIENT_IP = "10.88.0.1", "10.88.0.2"


def wait_udp(ns: Netns, proc: subprocess.Popen, port: int = 69) -> None:
    for _ in range(100):
        r = ns.run("ss", "-Hlun", f"sport = :{port}", check=False)
        if r.stdout.strip():
            return
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        time.sleep(0.05)
    raise RuntimeError("server did not bind")


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuMeter:
    """CPU time of a server and everything it forks, short-lived children included
    (tftp-hpa forks one per transfer): a cpuacct cgroup the server starts in."""

    def __init__(self) -> None:
        self.dir: Path | None = CPUACCT / f"nixie-bench-tftp-{os.getpid()}"
        try:
            self.dir.mkdir(exist_ok=True)
        except OSError:  # no cgroup v1 cpuacct here: figures print as nan
            self.dir = None

    def add(self, pid: int) -> None:
        """Move `pid` in (right after it starts: what it forks later is counted too)."""
        if self.dir is not None:
            (self.dir / "cgroup.procs").write_text(f"{pid}\n")

    def seconds(self) -> float:
        if self.dir is None:
            return float("nan")
        return int((self.dir / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        try:
            if self.dir is not None:
                self.dir.rmdir()
        except OSError:
            pass


def load(client: Netns, clients: int, blksize: int, seconds: float, size: int, out: Path,
         want: str, cpus: str | None = None) -> tuple[float, int]:
    """`clients` curl loops (on `cpus` only, if given) fetch the file for ~`seconds`
    and the first one's copy must have sha256 `want`; (MB/s over all of them,
    fetches done)."""
    url = f"tftp://{SERVER_IP}/{FILE.name}"
    pin = f"taskset -c {cpus} " if cpus else ""
    fetch = f"{pin}curl -sf --tftp-blksize {blksize} -o {out}/c$i {url}"
    total, took = fetch_loops(client, clients, seconds, fetch, out, grace=120)
    got = hashlib.sha256((out / "c0").read_bytes()).hexdigest()
    if got != want:
        raise RuntimeError("wrong bytes")
    return total * size / took / 1e6, total


def placements(names: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(name, the server's CPUs, the clients' CPUs) for taskset; split needs two CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    out: list[tuple[str, str | None, str | None]] = []
    for name in names:
        if name == "shared":
            out.append(("shared", None, None))
        elif name == "split":
            if len(cpus) < 2:
                print("skip: placement split needs two CPUs; this machine has one")
                continue
            half = len(cpus) // 2
            out.append(("split", ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))))
        else:
            raise SystemExit(f"unknown placement {name!r}: split or shared")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--placements", default="split,shared")
    ap.add_argument("--clients", default="1,20")
    ap.add_argument("--blksizes", default="512,1468")
    ap.add_argument("--workers", type=int, default=0,
                    help="our server's worker processes; 0 (default): one per two CPUs, as nixie serve runs it")
    args = ap.parse_args()
    for tool in ("in.tftpd", "curl", "taskset"):
        if not shutil.which(tool):
            print(f"skip: {tool} is not installed")
            return 0
    work = Path(tempfile.mkdtemp(prefix="nixie-bench-tftp-"))
    work.chmod(0o755)  # tftp-hpa drops privileges
    root = work / "root"
    root.mkdir()
    shutil.copyfile(FILE, root / FILE.name)
    (root / FILE.name).chmod(0o644)
    out = work / "out"
    out.mkdir()
    size = FILE.stat().st_size
    want = hashlib.sha256(FILE.read_bytes()).hexdigest()
    results: dict[tuple, float] = {}
    cpu_us: dict[tuple, float] = {}  # server CPU per DATA packet
    meter = CpuMeter()
    try:
        with server_and_client(SERVER_IP, CLIENT_IP) as (srv, cli):
            servers = {
                "ours": [sys.executable, "-m", "netservices.tftp", "--root", str(root),
                         "--listen", f"{SERVER_IP}:69", "--workers", str(args.workers)],
                "tftp-hpa": ["in.tftpd", "-L", "-s", "-a", f"{SERVER_IP}:69", str(root)],
            }
            runs = [(p, c, b) for p in placements(args.placements.split(","))
                    for c in [int(c) for c in args.clients.split(",")]
                    for b in [int(b) for b in args.blksizes.split(",")]]
            for (placement, server_cpus, client_cpus), clients, blksize in runs:
                # alternate the servers and keep each one's best round: the machine is
                # shared, and a burst of someone else's load should not decide the ratio
                for name, argv in [*servers.items()] * args.rounds:
                    pin = ["taskset", "-c", server_cpus] if server_cpus else []
                    proc = srv.popen(*pin, *argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                    meter.add(proc.pid)
                    try:
                        wait_udp(srv, proc)
                        cpu0 = meter.seconds()
                        mbs, fetches = load(cli, clients, blksize, args.seconds, size, out, want,
                                            client_cpus)
                        cpu = meter.seconds() - cpu0
                        key = (name, placement, clients, blksize)
                        packets = fetches * (size // blksize + 1)
                        cpu_us[key] = min(cpu_us.get(key, float("inf")), cpu / packets * 1e6)
                        results[key] = max(results.get(key, 0.0), mbs)
                    finally:
                        stop_processes([proc])
                case = (placement, clients, blksize)
                ours, ref = results[("ours", *case)], results[("tftp-hpa", *case)]
                print(f"tftp {FILE.name} {placement:6s} clients={clients:2d} blksize={blksize:4d}: "
                      f"ours {ours:7.1f} MB/s  tftp-hpa {ref:7.1f} MB/s  ratio {ours / ref:.2f}  "
                      f"(CPU us/packet: ours {cpu_us[('ours', *case)]:.1f}, "
                      f"tftp-hpa {cpu_us[('tftp-hpa', *case)]:.1f}; "
                      f"load average {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        meter.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
