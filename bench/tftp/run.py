"""TFTP: ours vs tftp-hpa serving ipxe.efi to curl clients, 1 and 20 at once,
blksize 512 and 1468, over a veth pair between two namespaces.

`python -m bench.tftp.run [--seconds S]` prints MB/s for each and the ratio."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.netlab import Netns, veth

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


def load(client: Netns, clients: int, blksize: int, seconds: float, size: int, out: Path
         ) -> float:
    """`clients` curl loops fetch the file for ~`seconds`; MB/s over all of them.

    All the loops run in one session (one popen), so with the kernel's autogroup
    scheduling the load generator counts as one tenant next to the server under
    test, as remote machines would, instead of twenty that starve it."""
    url = f"tftp://{SERVER_IP}/{FILE.name}"
    loop = (f'end=$(( $(date +%s%N) + {int(seconds * 1e9)} )); n=0; '
            f'while [ $(date +%s%N) -lt $end ]; do '
            f'curl -sf --tftp-blksize {blksize} -o {out}/c$i {url} || exit 1; n=$((n+1)); done; '
            f'echo $n > {out}/n$i')
    driver = (f'for i in $(seq 0 {clients - 1}); do ( {loop} ) & done; '
              'ok=0; for j in $(jobs -p); do wait $j || ok=1; done; exit $ok')
    for old in out.glob("n*"):
        old.unlink()
    t0 = time.monotonic()
    r = client.run("sh", "-c", driver, timeout=seconds + 120, check=False)
    took = time.monotonic() - t0
    if r.returncode:
        raise RuntimeError("a curl client failed")
    counts = [int((out / f"n{i}").read_text()) for i in range(clients)]
    want = hashlib.sha256(FILE.read_bytes()).hexdigest()
    got = hashlib.sha256((out / "c0").read_bytes()).hexdigest()
    if got != want:
        raise RuntimeError("wrong bytes")
    return sum(counts) * size / took / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default="1,20")
    ap.add_argument("--blksizes", default="512,1468")
    ap.add_argument("--workers", type=int, default=1, help="our server's loops")
    args = ap.parse_args()
    for tool in ("in.tftpd", "curl"):
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
    results: dict[tuple[str, int, int], float] = {}
    srv, cli = Netns(), Netns()
    try:
        veth(srv, "eth0", cli, "eth0")
        srv.run("ip", "addr", "add", f"{SERVER_IP}/24", "dev", "eth0")
        cli.run("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        servers = {
            "ours": [sys.executable, "-m", "netservices.tftp", "--root", str(root),
                     "--listen", f"{SERVER_IP}:69", "--workers", str(args.workers)],
            "tftp-hpa": ["in.tftpd", "-L", "-s", "-a", f"{SERVER_IP}:69", str(root)],
        }
        for clients in [int(c) for c in args.clients.split(",")]:
            for blksize in [int(b) for b in args.blksizes.split(",")]:
                # alternate the servers and keep each one's best round: the machine is
                # shared, and a burst of someone else's load should not decide the ratio
                for name, argv in [*servers.items()] * args.rounds:
                    proc = srv.popen(*argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                    try:
                        wait_udp(srv, proc)
                        mbs = load(cli, clients, blksize, args.seconds, size, out)
                        key = (name, clients, blksize)
                        results[key] = max(results.get(key, 0.0), mbs)
                    finally:
                        proc.terminate()
                        try:
                            proc.wait(5)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait()
                ours, ref = results[("ours", clients, blksize)], results[("tftp-hpa", clients, blksize)]
                print(f"tftp {FILE.name} clients={clients:2d} blksize={blksize:4d}: "
                      f"ours {ours:7.1f} MB/s  tftp-hpa {ref:7.1f} MB/s  ratio {ours / ref:.2f}",
                      flush=True)
    finally:
        srv.close()
        cli.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
