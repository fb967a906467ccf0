"""Admin UI latency: the dashboard and the hosts page with 1 000 hosts, 10 000
leases and 100 000 events, under 20 concurrent clients, against the real
`nixie serve` in its own network namespace (on loopback when not root).
Target: p99 under 100 ms.

The load comes from `wrk` (C, so the load generator's own overhead stays out
of the figures): 20 keep-alive connections, each request carrying one of 20
logged-in sessions, no think time (a closed loop: a client sends its next
request the moment the last answer arrives, the hardest form of "20 concurrent
clients"). Each page is loaded on its own, so its p50/p99 are its own; then
once more with a query parameter no one asked for yet on every request, so the
shared fragment cache cannot answer and every page is rendered.

There is no reference server for this page load; the figures are printed
against the target.

    python -m bench.web.run [--seconds S] [--clients C]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PASSWORD = "bench-password-1"
TARGET_P99_MS = 100.0
PAGES = {"dashboard": "/", "hosts": "/hosts/", "hosts p10": "/hosts/?page=10",
         "hosts search": "/hosts/?q=node-09"}


# ------------------------------------------------------------------ data


def populate(state_dir: Path, cfg) -> None:
    from appliance.domain import hosts, settings
    from appliance.state.db import Store, transaction

    store = Store(cfg.db_path)
    conn = store.conn()
    settings.complete_setup(cfg, conn, username="admin", password=PASSWORD, values={},
                            setup_code=settings.issue_setup_code(conn, cfg.state_dir))
    entries = {f"node-{i:04d}": {"mac_address": f"52:54:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01",
                                 "flake": "github:example/fleet"} for i in range(1000)}
    hosts.import_hosts(conn, json.dumps(entries))
    rnd = random.Random(7)
    t = time.time()
    states = ["unknown", "booting", "booted", "installing", "installed", "failed"]
    with transaction(conn):
        conn.executemany("UPDATE hosts SET state = ?, state_changed_at = ?, ip = ?, last_seen = ? WHERE name = ?",
                         [(rnd.choice(states), t - rnd.random() * 86400, f"10.0.{i // 250}.{i % 250 + 2}",
                           t - rnd.random() * 3600, f"node-{i:04d}") for i in range(1000)])
        conn.executemany(
            "INSERT INTO leases (ip, mac, hostname, state, starts, expires, updated_at) VALUES (?,?,?,?,?,?,?)",
            [(f"10.{1 + i // 65025}.{i // 255 % 255}.{i % 255 + 1}", f"02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:02",
              f"client{i}", rnd.choice(["bound", "bound", "bound", "expired", "released"]),
              t - 7200, t + rnd.randint(-3600, 3600), t) for i in range(10_000)])
        kinds = ["lease.bound", "lease.renewed", "host.booting", "host.booted", "build.queued",
                 "tftp.sent", "http.kernel", "host.installed", "host.failed"]
        rows = []
        for i in range(100_000):
            ts = t - (100_000 - i) * 6.0  # a week of history, oldest first
            k = rnd.choice(kinds)
            rows.append((ts, k, "error" if k == "host.failed" else "info", f"{k} event {i}",
                         rnd.randint(1, 1000) if k.startswith("host.") else None))
        conn.executemany("INSERT INTO events (ts, kind, level, message, host_id) VALUES (?,?,?,?,?)", rows)
        conn.executemany(
            "INSERT INTO builds (host_id, host_name, flake, attr, status, queued_at) VALUES (?,?,?,?,?,?)",
            [(i + 1, f"node-{i:04d}", "github:example/fleet", f"nixosConfigurations.node-{i:04d}",
              rnd.choice(["queued", "running", "succeeded", "failed"]), t - i) for i in range(200)])
    conn.execute("ANALYZE")
    store.close()


# ------------------------------------------------------------------ sessions


def login(host: str, port: int) -> str:
    """Log in like a browser; returns the session cookie, checked to be stable
    (a page view must not re-issue it)."""
    # web.tls (the default): the appliance's own self-signed certificate
    c = http.client.HTTPSConnection(host, port, timeout=10,
                                    context=ssl._create_unverified_context())
    c.request("GET", "/login")
    r = c.getresponse()
    body = r.read().decode()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', body).group(1)
    form = f"csrf_token={token}&username=admin&password={PASSWORD}"
    c.request("POST", "/login", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    r = c.getresponse()
    r.read()
    assert r.status == 302, f"login failed: {r.status}"
    cookie = r.getheader("Set-Cookie").split(";")[0]
    for _ in range(2):  # a browser keeps whatever cookie a page sets; then it must be stable
        c.request("GET", "/", headers={"Cookie": cookie})
        r = c.getresponse()
        r.read()
        assert r.status == 200, f"dashboard: {r.status}"
        if r.getheader("Set-Cookie"):
            cookie = r.getheader("Set-Cookie").split(";")[0]
    assert r.getheader("Set-Cookie") is None, "every page view re-issues the session cookie"
    return cookie


def sessions_main(host: str, port: int, count: int) -> None:
    print("\n".join(login(host, port) for _ in range(count)))


# ------------------------------------------------------------------ orchestration


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU time so far of a process and every live descendant."""
    tck = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tck)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(c for c, (ppid, _) in stats.items() if ppid == p)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=8, help="per page and mode")
    ap.add_argument("--sessions", nargs=3, metavar=("HOST", "PORT", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sessions:  # log in N sessions, run inside the namespace
        sessions_main(a.sessions[0], int(a.sessions[1]), int(a.sessions[2]))
        return 0
    if not shutil.which("wrk"):
        print("bench/web needs wrk (scripts/apt-packages.txt; make setup installs it)")
        return 1

    sys.path.insert(0, str(ROOT))
    from appliance.config.schema import example_config, parse_config
    from lab.netns import start_serve, stop_processes, wait_port

    tmp = Path(tempfile.mkdtemp(prefix="nixie-bench-web-"))
    ns = None
    if os.geteuid() == 0:
        from lab.netns import Netns

        ns = Netns()
    host, port = "127.0.0.1", 8080 if ns else free_port()
    data = example_config(state_dir=str(tmp / "state"), interface="lo", address="127.0.0.1/8")
    data["dhcp"].update(mode="off", range=["127.0.0.100", "127.0.0.199"])
    data["dns"]["enable"] = False
    data["tftp"]["listen"] = ["127.0.0.1:6969"]
    data["boot"]["http_listen"] = "127.0.0.1:8081"
    data["web"]["listen"] = [f"{host}:{port}"]
    cfg_path = tmp / "config.json"
    cfg_path.write_text(json.dumps(data))
    cfg = parse_config(data, str(cfg_path))
    t0 = time.perf_counter()
    populate(tmp / "state", cfg)
    print(f"populated 1000 hosts, 10000 leases, 100000 events in {time.perf_counter() - t0:.1f} s")

    def argv(*cmd):
        return ns.argv(*cmd) if ns else list(cmd)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = start_serve(ns, cfg_path, tmp / "serve.log", "--log-level", "warning", env=env)
    results: list[tuple[str, str, dict, float]] = []
    try:
        if not wait_port(ns, host, port, timeout=30):
            print((tmp / "serve.log").read_text())
            return 1
        r = subprocess.run(argv(sys.executable, "-m", "bench.web.run", "--sessions", host, str(port),
                                str(a.clients)), capture_output=True, text=True, cwd=ROOT, env=env,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        cookies = tmp / "cookies.txt"
        cookies.write_text(r.stdout)

        def wrk(path: str, clients: int, seconds: int, bust: bool) -> tuple[dict, float]:
            cpu0 = tree_cpu_seconds(proc.pid)
            r = subprocess.run(argv("wrk", f"-t{min(2, clients)}", f"-c{clients}", f"-d{int(seconds)}s",
                                    "--timeout", "10s", "-s", str(HERE / "load.lua"),
                                    f"https://{host}:{port}{path}", "--", str(cookies), path,
                                    *(["bust"] if bust else [])),
                               capture_output=True, text=True, timeout=seconds + 60)
            line = [x for x in r.stdout.splitlines() if x.startswith("{")]
            if r.returncode != 0 or not line:
                raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
            out = json.loads(line[-1])
            return out, (tree_cpu_seconds(proc.pid) - cpu0) / max(1, out["requests"]) * 1000

        for path in PAGES.values():  # warm every page once, not measured
            wrk(path, 1, 1, False)
        single = {name: wrk(path, 1, 2, True)[0] for name, path in PAGES.items()}
        for mode, bust in (("as served", False), ("rendered", True)):
            for name, path in PAGES.items():
                out, cpu_ms = wrk(path, a.clients, a.seconds, bust)
                results.append((mode, name, out, cpu_ms))
    finally:
        stop_processes([proc], timeout=10, group=True)
        if ns:
            ns.close()
    print(f"{'namespace ' + ns.name if ns else 'loopback'}; load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("one client alone, rendered each time: " + ", ".join(
        f"{name} p50 {v['p50_ms']:.1f} ms" for name, v in single.items()))
    titles = {"as served": "pages as served (shared fragments at most 1 s old)",
              "rendered": "every request rendered (unique URLs defeat the fragment cache)"}
    for mode, title in titles.items():
        print(f"\n{title}: {a.clients} concurrent keep-alive clients, {a.clients} sessions, {a.seconds:.0f} s per page")
        print(f"{'page':<14}{'req/s':>7}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}"
              f"{'cpu ms':>8}{'errors':>8}   p99 / target ({TARGET_P99_MS:.0f} ms)")
        worst = 0.0
        for m, name, out, cpu_ms in results:
            if m != mode:
                continue
            worst = max(worst, out["p99_ms"])
            print(f"{name:<14}{out['requests'] / out['seconds']:>7.0f}{out['p50_ms']:>8.1f}"
                  f"{out['p90_ms']:>8.1f}{out['p99_ms']:>8.1f}{out['max_ms']:>8.1f}{cpu_ms:>8.2f}"
                  f"{out['errors'] + out['status_errors']:>8}   {out['p99_ms'] / TARGET_P99_MS:.2f}")
        print(f"worst p99 {worst:.1f} ms: {'meets' if worst < TARGET_P99_MS else 'MISSES'} the target")
    print("\ncpu ms: server CPU per request, over `nixie serve` and its child processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
