"""DHCPv6 benchmark: ours vs Kea (kea-dhcp6, memfile).

One load generator (bench/dhcp6/loadgen.c, compiled here with gcc) does
SOLICIT->REPLY exchanges with random DUID-LLs, 64 in flight, over the same veth
pair between two fresh namespaces for every server, in two modes:

  "4msg":  the full SOLICIT/ADVERTISE/REQUEST/REPLY exchange
  "rapid": SOLICIT with rapid commit -> REPLY (both servers allow it)

For each server and mode:

  phase "1k":  exchanges 0 -> 1 000 leases (measured), on --fresh servers one after
               the other, each started with no lease (ours: a new state directory; Kea:
               a new lease file); the figure is all their exchanges over all their
               phases' time. One 1k phase lasts some 0.05 s: alone it is mostly noise
               and the few first batches, so each round measures several, the same
               number for every server.
  fill:        1 000 -> 10 000 leases on the last of those servers (capped in time)
  phase "10k": 10 000 more exchanges with 10 000+ leases held (measured)

Ours runs as `nixie serve` (DHCPv6 only), every binding committed to SQLite
before its REPLY leaves (dhcp.lease_sync = normal: the WAL written, not fsynced,
survives kill -9 like Kea's memfile; "ours-full" fsyncs every group commit).
After the run the bench checks that SQLite holds as many bound leases as the
generator received REPLYs.

    python -m bench.dhcp6.run [--servers ours,ours-full,kea] [--modes 4msg,rapid] [--fresh 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from appliance.config.schema import example_config
from lab.netns import Netns, start_serve, stop_processes, veth

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ADDRESS6 = "fd00:80::1/64"
POOL6 = ("fd00:80::1:0", "fd00:80::3:ffff")
FILL_SECONDS = 60
PHASE_SECONDS = 30
MODES = {"4msg": 4, "rapid": 2}


def compile_loadgen(tmp: Path) -> Path:
    exe = tmp / "loadgen6"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(HERE / "loadgen.c")], check=True)
    return exe


def wait_link_local(ns: Netns, dev: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.run("ip", "-6", "addr", "show", "dev", dev, "scope", "link").stdout
        if "inet6" in out and "tentative" not in out:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no usable link-local address on {dev}")


def wait_udp547(ns: Netns, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        if ":547 " in ns.run("ss", "-Hulpn").stdout.replace("\n", " ") + " ":
            time.sleep(0.3)
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not bind port 547: {log.read_text()[-2000:]}")


def start_ours(ns: Netns, tmp: Path, sync: str = "normal") -> tuple[subprocess.Popen, dict]:
    state = tmp / f"ours-{sync}-state"
    cfg = example_config(state_dir=str(state), interface="s0", address="10.80.0.1/16")
    cfg["lan"]["address6"] = ADDRESS6
    cfg["dhcp"].update(mode="off", lease_sync=sync, range=["10.80.1.0", "10.80.255.254"])
    cfg["dhcp6"] = {"mode": "stateful", "range": list(POOL6), "preferred_seconds": 3000,
                    "valid_seconds": 4000, "rapid_commit": True}
    cfg["ra"] = {"enable": False}
    cfg["dns"]["enable"] = False
    path = tmp / f"ours-{sync}.json"
    path.write_text(json.dumps(cfg))
    log = tmp / f"ours-{sync}.log"
    proc = start_serve(ns, path, log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_udp547(ns, proc, log)
    return proc, {"db": state / "nixie.db", "log": log}


def start_kea(ns: Netns, tmp: Path) -> tuple[subprocess.Popen, dict]:
    d = tmp / "kea"
    d.mkdir()
    conf = {"Dhcp6": {
        "interfaces-config": {"interfaces": ["s0"]}, "data-directory": str(d),
        "lease-database": {"type": "memfile", "persist": True, "name": str(d / "leases6.csv"),
                           "lfc-interval": 0},
        "preferred-lifetime": 3000, "valid-lifetime": 4000,
        "subnet6": [{"id": 1, "subnet": "fd00:80::/64", "interface": "s0", "rapid-commit": True,
                     "pools": [{"pool": f"{POOL6[0]} - {POOL6[1]}"}],
                     "option-data": [{"name": "dns-servers", "data": "fd00:80::1"}]}],
        "loggers": [{"name": "kea-dhcp6", "severity": "WARN",
                     "output_options": [{"output": str(d / "kea.log")}]}],
    }}
    (d / "kea.json").write_text(json.dumps(conf))
    log = d / "stdout.log"
    env = {**os.environ, "KEA_PIDFILE_DIR": str(d), "KEA_LOCKFILE_DIR": str(d)}
    proc = subprocess.Popen(ns.argv("kea-dhcp6", "-c", str(d / "kea.json")), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_udp547(ns, proc, log)
    return proc, {"leasefile": d / "leases6.csv"}


SERVERS = {"ours": start_ours, "ours-full": lambda ns, tmp: start_ours(ns, tmp, "full"),
           "kea": start_kea}


def loadgen(gen: Netns, exe: Path, count: int, inflight: int, seconds: float, seed: int,
            mode: int) -> dict:
    r = gen.run(str(exe), "g0", str(count), str(inflight), str(seconds), str(seed), str(mode),
                timeout=seconds + 30)
    return json.loads(r.stdout)


def bound_in_sqlite(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM leases6 WHERE state = 'bound'").fetchone()[0]
    finally:
        conn.close()


def bench_one(name: str, mode: str, exe: Path, tmp: Path, inflight: int, fresh: int) -> dict:
    tmp.mkdir()
    srv, gen = Netns(), Netns()
    proc = None
    m = MODES[mode]
    try:
        veth(srv, "s0", gen, "g0")
        srv.run("ip", "-6", "addr", "add", ADDRESS6, "dev", "s0", "nodad")
        wait_link_local(srv, "s0")
        wait_link_local(gen, "g0")
        out: dict = {"replied": 0, "durable": 0}
        info: dict = {}
        phases = []
        for k in range(fresh):  # the 1k phase on `fresh` servers, each with no lease
            if proc is not None:
                stop_processes([proc], timeout=10, group=True)
                if name.startswith("ours"):
                    out["durable"] += bound_in_sqlite(info["db"])
            (tmp / str(k)).mkdir()
            proc, info = SERVERS[name](srv, tmp / str(k))
            phases.append(loadgen(gen, exe, 1000, inflight, PHASE_SECONDS, 1 + k, m))
            out["replied"] += phases[-1]["done"]
        secs = sum(p["seconds"] for p in phases)
        out["1k"] = {"done": sum(p["done"] for p in phases), "seconds": round(secs, 3),
                     "rate": round(sum(p["done"] for p in phases) / secs, 1),
                     "timeouts": sum(p["timeouts"] for p in phases),
                     "failed": sum(p["failed"] for p in phases),
                     "each": [p["rate"] for p in phases]}
        out["fill"] = loadgen(gen, exe, 9000, inflight, FILL_SECONDS, 100, m)
        out["leases_before_10k"] = phases[-1]["done"] + out["fill"]["done"]
        out["10k"] = loadgen(gen, exe, 10000, inflight, PHASE_SECONDS, 101, m)
        out["replied"] += out["fill"]["done"] + out["10k"]["done"]
        if name.startswith("ours"):
            out["durable"] += bound_in_sqlite(info["db"])
        return out
    finally:
        if proc is not None:
            stop_processes([proc], timeout=10, group=True)
        gen.close()
        srv.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="ours,kea")
    ap.add_argument("--modes", default="4msg,rapid")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved runs per server and mode; the median counts")
    ap.add_argument("--fresh", type=int, default=5,
                    help="fresh servers per run whose first 1 000 leases make the 1k figure")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/dhcp6 needs root (network namespaces)")
        return 1
    names = [n for n in args.servers.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    missing = [b for b, n in (("kea-dhcp6", "kea"), ("gcc", None))
               if (n is None or n in names) and not shutil.which(b)]
    if missing:
        print("missing: " + " ".join(missing))
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="nixie-bench-dhcp6-"))
    os.chmod(tmp, 0o755)
    try:
        exe = compile_loadgen(tmp)
        runs: dict[tuple[str, str], list[dict]] = {}
        for rnd in range(args.rounds):
            for mode in modes:
                for n in names:  # servers alternate within each round: same load for each
                    print(f"-- {n} {mode} (round {rnd + 1}) ...", flush=True)
                    r = bench_one(n, mode, exe, tmp / f"{n}-{mode}-{rnd}", args.inflight,
                                  args.fresh)
                    print(f"   1k: {r['1k']}\n   fill: {r['fill']}\n   10k: {r['10k']}", flush=True)
                    runs.setdefault((n, mode), []).append(r)
        rate = {(k, ph): median(r[ph]["rate"] for r in rs) for k, rs in runs.items()
                for ph in ("1k", "10k")}
        print(f"\nmedian of {args.rounds} interleaved rounds (exchanges per second; "
              f"@1k: {args.fresh} fresh servers' first 1 000 leases per round; "
              "every round's figures above)")
        print(f"{'server':<10} {'mode':<6} {'ex/s @1k':>10} {'ex/s @10k':>10} {'leases held':>12} "
              f"{'timeouts':>9}")
        for (n, mode), rs in runs.items():
            t = sum(r[ph]["timeouts"] for r in rs for ph in ("1k", "fill", "10k"))
            print(f"{n:<10} {mode:<6} {rate[(n, mode), '1k']:>10.0f} "
                  f"{rate[(n, mode), '10k']:>10.0f} "
                  f"{min(r['leases_before_10k'] for r in rs):>12} {t:>9}")
        for (n, mode), rs in runs.items():
            if not n.startswith("ours"):
                continue
            replied = sum(r["replied"] for r in rs)
            durable = sum(r["durable"] for r in rs)
            ok = "every REPLYed lease durable" if all(
                r["durable"] >= r["replied"] for r in rs) else "MISSING LEASES"
            print(f"\n{n} {mode}: {replied} leases REPLYed, {durable} bound in SQLite ({ok})")
            if ("kea", mode) in runs:
                for ph in ("1k", "10k"):
                    print(f"ratio {n}/kea {mode} @{ph}: "
                          f"{rate[(n, mode), ph] / (rate[('kea', mode), ph] or 1e-9):.2f}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
