"""TFTP with worker processes: real tftp-hpa clients in one namespace, our server
(`python -m netservices.tftp --workers 2`, and `nixie serve` with tftp.workers 2)
in another."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess

import pytest

from lab.netns import Netns, bridge, bridge_port, start_serve, wait_port
from tests.conftest import wait_for
from tests.netns.serve_lab import admin_api_token, http_get, pid_alive, router_config
from tests.netns.tftp_lab import sha, tftp_lab

SERVER, CLIENT = "10.81.0.1", "10.81.0.2"
FILES = ("ipxe.efi", "undionly.kpxe", "snponly.efi")


def children(pid: int) -> dict[int, str]:
    """pid -> command line of every process whose parent is `pid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found[int(entry)] = cmd
    return found


def tftp_workers(pid: int) -> set[int]:
    return {p for p, cmd in children(pid).items() if "netservices.tftp.worker" in cmd}


def fetch_all(cli: Netns, out, count: int, server: str = SERVER) -> None:
    """`count` tftp-hpa clients at once, each getting one of FILES; checks every byte."""
    procs = [cli.popen("tftp", "-m", "binary", server, "-c", "get", FILES[i % 3],
                       str(out / f"c{i}"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(count)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * count, outputs
    for i in range(count):
        assert sha(out / f"c{i}") == sha(f"/usr/lib/ipxe/{FILES[i % 3]}"), i
        (out / f"c{i}").unlink()


@pytest.fixture
def pool(tmp_path):
    """Our server with two workers in a namespace; yields (client ns, proc, out, events, stop)."""
    tmp_path.chmod(0o755)
    root, out, events = tmp_path / "root", tmp_path / "out", tmp_path / "events.jsonl"
    root.mkdir()
    out.mkdir()
    with tftp_lab(root, SERVER, CLIENT, "--events", str(events), "--workers", "2") as lab:
        yield lab.client, lab.proc, out, events, lab.stop


def test_two_workers_serve_many_clients_and_report_to_the_parent(pool):
    cli, proc, out, events, stop = pool
    workers = tftp_workers(proc.pid)
    assert len(workers) == 2
    # each worker alone for a few requests (the other one stopped), so both have served
    for paused in sorted(workers):
        os.kill(paused, signal.SIGSTOP)
        try:
            fetch_all(cli, out, 3)
        finally:
            os.kill(paused, signal.SIGCONT)
    fetch_all(cli, out, 30)
    stats = stop()
    assert stats["completed"] == 36 and stats["transfers"] == 36 and len(stats["per_worker"]) == 2, stats
    per_worker = {int(pid): s for pid, s in stats["per_worker"].items()}
    assert set(per_worker) == workers
    assert all(s["completed"] >= 3 for s in per_worker.values()), per_worker
    assert sum(s["completed"] for s in per_worker.values()) == 36
    sent = [json.loads(line) for line in events.read_text().splitlines()]
    sent = [e for e in sent if e["kind"] == "boot.tftp" and e["data"]["status"] == "sent"]
    assert len(sent) == 36 and {e["ip"] for e in sent} == {CLIENT}
    assert {e["data"]["worker"] for e in sent} == workers
    assert not any(pid_alive(p) for p in workers)  # stopped with the parent


def test_a_killed_worker_is_replaced_and_serving_goes_on(pool):
    cli, proc, out, events, stop = pool
    first = tftp_workers(proc.pid)
    fetch_all(cli, out, 6)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(tftp_workers(proc.pid)) == 2 and victim not in tftp_workers(proc.pid))
    now = tftp_workers(proc.pid)
    assert len(now & first) == 1
    fetch_all(cli, out, 20)
    stats = stop()
    assert stats["worker_restarts"] == 1 and len(stats["per_worker"]) == 2, stats
    assert {int(p) for p in stats["per_worker"]} == now
    # the killed worker's counters were kept (it may have died before its last report)
    assert 20 <= stats["completed"] <= 26, stats


def test_workers_end_when_the_parent_is_killed(pool):
    cli, proc, out, events, stop = pool
    workers = tftp_workers(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    assert wait_for(lambda: not any(pid_alive(p) for p in workers)), workers


@pytest.mark.parametrize("workers,busy_poll_us", [(2, None), (1, 5000)])
def test_serve_with_workers_reports_and_stops_them(tmp_path, workers, busy_poll_us):
    """serve runs TFTP in worker processes, even one (it busy-polls: not in serve's
    own process), passes them tftp.busy_poll_us, and stops them with itself."""
    with Netns() as ns, Netns() as cli:
        bridge(ns, "br-lan", f"{SERVER}/24")
        bridge_port(ns, "br-lan", "lan1", cli, address=f"{CLIENT}/24")
        tftp = {"workers": workers} | ({"busy_poll_us": busy_poll_us} if busy_poll_us else {})
        path = router_config(tmp_path, address=f"{SERVER}/24", tftp=tftp)
        out = tmp_path / "out"
        out.mkdir()
        token = admin_api_token(path)  # /healthz shows the services' stats to an admin only
        proc = start_serve(ns, path, tmp_path / "serve.log")
        try:
            assert wait_port(ns, SERVER, 8080, timeout=30), (tmp_path / "serve.log").read_text()
            assert wait_for(lambda: len(tftp_workers(proc.pid)) == workers), children(proc.pid)
            pids = tftp_workers(proc.pid)
            fetch_all(cli, out, 8)

            def tftp_stats() -> dict:
                _, body = http_get(ns, f"https://{SERVER}:8080/healthz", token)
                return json.loads(body)["services"]["tftp"]["stats"] or {}

            assert wait_for(lambda: tftp_stats().get("completed") == 8), tftp_stats()
            assert tftp_stats()["workers"] == workers
            if busy_poll_us:  # 5 ms: the client's ACKs come within it
                st = tftp_stats()
                assert st.get("busy_polls", 0) > 0 and st.get("busy_poll_hits", 0) > 0, st
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = (tmp_path / "serve.log").read_text()
        assert "clean=True" in log, log
        assert not any(pid_alive(p) for p in pids), pids
        with sqlite3.connect(tmp_path / "state" / "nixie.db") as db:
            rows = db.execute("SELECT ip, data FROM events WHERE kind = 'boot.tftp'").fetchall()
        assert len(rows) == 8 and {ip for ip, _ in rows} == {CLIENT}, rows
        assert {json.loads(d)["worker"] for _, d in rows} <= pids
        for line in log.strip().splitlines():
            assert line.startswith("ts="), f"not a structured line: {line}"
