"""The web UI served by worker processes (`web.workers`): they answer with serve's
health, a killed worker is replaced, and they die with serve, even a SIGKILLed serve."""

import json
import os
import signal
import sys
import time

import pytest

from appliance.config import example_config
from appliance.netlab import Netns, bridge, start_serve, stop_processes, wait_port

URL = "http://10.77.0.1:8080"


@pytest.fixture
def served(tmp_path):
    with Netns() as ns:
        bridge(ns, "br-lan", "10.77.0.1/24")
        cfg = example_config(state_dir=str(tmp_path / "state"), interface="br-lan")
        cfg["dhcp"]["mode"] = "off"
        cfg["dns"]["enable"] = False
        cfg["web"]["workers"] = 2
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        proc = start_serve(ns, path, tmp_path / "serve.log")
        try:
            assert wait_port(ns, "10.77.0.1", 8080, timeout=20), (tmp_path / "serve.log").read_text()
            yield ns, proc, tmp_path / "serve.log"
        finally:
            stop_processes([proc], timeout=5, group=True)


def get(ns, path):
    code = ("import urllib.request,sys\n"
            "try:\n r=urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())\n")
    r = ns.run(sys.executable, "-c", code, URL + path)
    status, _, body = r.stdout.partition("\n")
    return int(status), body


def web_stats(ns, until=lambda s: True, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(ns, "/healthz")
        stats = json.loads(body)["services"]["web"]["stats"]
        if until(stats) or time.monotonic() > deadline:
            return status, json.loads(body), stats
        time.sleep(0.5)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_serve_and_are_replaced(served):
    ns, proc, log = served
    status, health, stats = web_stats(ns, until=lambda s: s.get("alive") == 2)
    assert status == 200 and health["ok"], health
    assert stats["workers"] == 2 and stats["alive"] == 2, stats
    pids = stats["pids"]
    assert proc.pid not in pids and all(alive(p) for p in pids)
    # the login page (a worker renders it) comes back from every connection
    assert all(get(ns, "/login")[0] == 200 for _ in range(6))

    os.kill(pids[0], signal.SIGKILL)
    _, _, after = web_stats(ns, until=lambda s: s["restarts"] >= 1 and s["alive"] == 2)
    assert after["restarts"] == 1 and after["alive"] == 2, after
    assert pids[0] not in after["pids"] and pids[1] in after["pids"]
    assert get(ns, "/login")[0] == 200
    assert "web worker exited; starting another" in log.read_text()


def test_workers_die_with_a_killed_serve(served):
    ns, proc, _ = served
    _, _, stats = web_stats(ns, until=lambda s: s.get("alive") == 2)
    pids = stats["pids"]
    assert len(pids) == 2
    os.kill(proc.pid, signal.SIGKILL)  # no chance to stop them: their stdin just ends
    proc.wait(timeout=5)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "web workers outlived a SIGKILLed serve"
