"""DNS benchmark: ours vs dnsmasq under dnsperf, in namespaces, in one run.

Topology: a client namespace (dnsperf) -- a server namespace (ours on :53,
dnsmasq on :5353, both with the same local names and the same upstream) -- an
upstream namespace (dnsmasq holding the forwarded names, TTL 3600). Two loads:
local names (A for hostN.lab.nixie) and cached forwards (A for wwwN.example.org,
after one warm-up pass so both caches are hot). Prints queries/s and the ratio.

Run: python -m bench.dns.run [--seconds 8] [--names 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.netns import Netns, stop_processes, veth, wait_port

ROOT = Path(__file__).resolve().parents[2]
SERVER, CLIENT, UPSTREAM = "10.53.0.1", "10.53.0.2", "10.54.0.53"
DOMAIN = "lab.nixie"

OURS = """
import sys, threading, signal
sys.path.insert(0, {root!r})
from appliance.runtime.stopsignal import StopSignal
from netservices.dns import make_dns_service
names = [(f"host{{i}}", f"10.60.{{i // 250}}.{{i % 250 + 1}}") for i in range({n})]
class Directory:
    def name_records(self):
        return names
svc = make_dns_service(listen=["{server}:{port}"], domain="{domain}", network="10.53.0.0/16",
                       directory=Directory(), upstreams=["{upstream}"], clients=["10.60.0.0/16"],
                       workers={workers})
stop = threading.Event()
runner = threading.Thread(target=svc.run, args=(stop,))
runner.start()
StopSignal().install(signal.SIGTERM).wait()  # its handler takes no lock; this thread stops svc
stop.set()
svc.shutdown()
runner.join()
print(svc.stats(), file=sys.stderr, flush=True)
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (the machine is shared: CPU per query is the fair figure)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dnsperf(client: Netns, port: int, datafile: Path, seconds: float, warm: bool = False) -> dict:
    args = ["dnsperf", "-s", SERVER, "-p", str(port), "-d", str(datafile), "-c", "16", "-q", "128",
            "-t", "2"]
    args += ["-n", "1"] if warm else ["-l", str(seconds)]
    r = client.run(*args, check=False, timeout=seconds + 60)
    out = r.stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    return {"qps": float(qps.group(1)) if qps else 0.0, "lost": int(lost.group(1)) if lost else -1,
            "completed": int(done.group(1)) if done else 0, "raw": out if not qps else ""}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--names", type=int, default=1000)
    args = ap.parse_args()
    n = args.names
    nss: list[Netns] = []
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="nixie-bench-dns-"))
    tmp.chmod(0o755)
    try:
        server, client, upstream = Netns(), Netns(), Netns()
        nss += [server, client, upstream]
        veth(server, "lan0", client, "eth0")
        veth(server, "wan0", upstream, "eth0")
        server.run("ip", "addr", "add", f"{SERVER}/24", "dev", "lan0")
        server.run("ip", "addr", "add", "10.54.0.1/24", "dev", "wan0")
        client.run("ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        upstream.run("ip", "addr", "add", f"{UPSTREAM}/24", "dev", "eth0")

        local_hosts = tmp / "local.hosts"
        local_hosts.write_text("".join(f"10.60.{i // 250}.{i % 250 + 1} host{i}.{DOMAIN}\n"
                                       for i in range(n)))
        up_hosts = tmp / "upstream.hosts"
        up_hosts.write_text("".join(f"10.70.{i // 250}.{i % 250 + 1} www{i}.example.org\n"
                                    for i in range(n)))
        (tmp / "local.q").write_text("".join(f"host{i}.{DOMAIN} A\n" for i in range(n)))
        (tmp / "forward.q").write_text("".join(f"www{i}.example.org A\n" for i in range(n)))

        common = ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
                  "--pid-file=", "--user=root", "--log-facility=-"]
        procs.append(upstream.popen(*common, f"--listen-address={UPSTREAM}", "--port=53",
                                    f"--addn-hosts={up_hosts}", "--local-ttl=3600",
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ref = server.popen(*common, f"--listen-address={SERVER}", "--port=5353",
                                  f"--addn-hosts={local_hosts}", "--local-ttl=60",
                                  f"--server={UPSTREAM}", "--cache-size=10000",
                                  "--dns-forward-max=1000",
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ref)
        ours_log = open(tmp / "ours.log", "w")
        servers = []  # (label, port, process); `ip netns exec` execs: the pid is the server's
        for workers, port in ((1, 53), (2, 54)):
            p = server.popen(sys.executable, "-c", OURS.format(
                root=str(ROOT), n=n, server=SERVER, domain=DOMAIN, upstream=UPSTREAM, port=port,
                workers=workers), stdout=ours_log, stderr=subprocess.STDOUT)
            procs.append(p)
            servers.append((f"ours x{workers}", port, p))
        servers.append(("dnsmasq", 5353, ref))
        for port in (53, 54, 5353):
            if not wait_port(server, SERVER, port, timeout=15):
                print(f"server on port {port} did not start", file=sys.stderr)
                return 1
        time.sleep(0.5)

        results = {}
        for load in ("local", "forward"):
            q = tmp / f"{load}.q"
            for name, port, proc in servers:
                if load == "forward":
                    dnsperf(client, port, q, args.seconds, warm=True)  # fill the cache
                cpu0 = cpu_seconds(proc.pid)
                res = dnsperf(client, port, q, args.seconds)
                res["cpu"] = cpu_seconds(proc.pid) - cpu0
                results[(load, name)] = res

        print(f"DNS, dnsperf (16 clients, 128 in flight, {args.seconds:.0f} s per run, "
              f"{n} names), namespaces over veth; ratio = ours / dnsmasq:")
        print(f"{'load':<16}{'server':<10}{'q/s':>10}{'ratio':>8}{'q/cpu-s':>10}{'ratio':>8}"
              f"{'lost':>6}")
        for load, label in (("local", "local names"), ("forward", "cached forwards")):
            d = results[(load, "dnsmasq")]
            d_eff = d["completed"] / d["cpu"] if d["cpu"] else float("nan")
            for name, _, _ in servers:
                r = results[(load, name)]
                eff = r["completed"] / r["cpu"] if r["cpu"] else float("nan")
                ratio = r["qps"] / d["qps"] if d["qps"] else float("nan")
                print(f"{label:<16}{name:<10}{r['qps']:>10.0f}{ratio:>8.2f}{eff:>10.0f}"
                      f"{eff / d_eff:>8.2f}{r['lost']:>6}")
                if r["raw"]:
                    print(r["raw"], file=sys.stderr)
        return 0
    finally:
        stop_processes(procs)
        for ns in nss:
            ns.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
