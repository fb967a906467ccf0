"""The web UI served by worker processes (`web.workers`): they answer with serve's
health, a killed worker is replaced, and they die with serve, even a SIGKILLed serve."""

import json
import os
import signal
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.netns import Netns, bridge, serving
from tests.conftest import wait_for
from tests.netns.serve_lab import admin_api_token, http_get, pid_alive, router_config

URL = "https://10.77.0.1:8080"  # web.tls: the appliance's own certificate


@pytest.fixture
def served(tmp_path):
    path, log = router_config(tmp_path, web={"workers": 2}), tmp_path / "serve.log"
    token = admin_api_token(path)  # /healthz shows the services' stats to an admin only
    with Netns() as ns:
        bridge(ns, "br-lan", "10.77.0.1/24")
        with serving(ns, path, log, [("10.77.0.1", 8080)], stop_timeout=5, group=True) as proc:
            yield ns, proc, log, token


def get(ns, path, token=None):
    return http_get(ns, URL + path, token)


def web_stats(ns, token, until=lambda s: True, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(ns, "/healthz", token)
        stats = json.loads(body)["services"]["web"]["stats"]
        if until(stats) or time.monotonic() > deadline:
            return status, json.loads(body), stats
        time.sleep(0.5)


def test_workers_serve_and_are_replaced(served):
    ns, proc, log, token = served
    status, health, stats = web_stats(ns, token, until=lambda s: s.get("alive") == 2)
    assert status == 200 and health["ok"], health
    assert stats["workers"] == 2 and stats["alive"] == 2, stats
    pids = stats["pids"]
    assert proc.pid not in pids and all(pid_alive(p) for p in pids)
    # the login page (a worker renders it) comes back from every connection
    assert all(get(ns, "/login")[0] == 200 for _ in range(6))

    os.kill(pids[0], signal.SIGKILL)
    _, _, after = web_stats(ns, token, until=lambda s: s["restarts"] >= 1 and s["alive"] == 2)
    assert after["restarts"] == 1 and after["alive"] == 2, after
    assert pids[0] not in after["pids"] and pids[1] in after["pids"]
    assert get(ns, "/login")[0] == 200
    assert "web worker exited; starting another" in log.read_text()
    # /metrics, whichever worker answers, counts every worker's requests, the killed one's too
    counts = [login_count(get(ns, "/metrics")) for _ in range(4)]
    print(f"login pages counted by /metrics: {counts}")
    assert counts == [counts[0]] * 4 and counts[0] >= 7, counts


def login_count(answer) -> float:
    status, body = answer
    assert status == 200, body[:300]
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
               if s.name == "nixie_web_request_seconds_count" and s.labels["area"] == "auth")


def test_workers_die_with_a_killed_serve(served):
    ns, proc, _, token = served
    _, _, stats = web_stats(ns, token, until=lambda s: s.get("alive") == 2)
    pids = stats["pids"]
    assert len(pids) == 2
    os.kill(proc.pid, signal.SIGKILL)  # no chance to stop them: their stdin just ends
    proc.wait(timeout=5)
    assert wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5), \
        "web workers outlived a SIGKILLed serve"


# GET /metrics from a given source address inside the namespace: prints the status code
FROM_SNIPPET = (
    "import socket,ssl,sys\n"
    "s=socket.create_connection(('10.77.0.1',8080),timeout=5,source_address=(sys.argv[1],0))\n"
    "t=ssl._create_unverified_context().wrap_socket(s,server_hostname='10.77.0.1')\n"
    "t.sendall(b'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
    "print(t.recv(64).split()[1].decode())\n")


def test_metrics_refused_from_outside_the_lan(served):
    """A real connection from an address outside the LAN (on an interface of its own in
    the router's namespace) gets 403; the same request from the LAN address the metrics."""
    ns, _, _, _ = served
    ns.run("ip", "link", "add", "outside0", "type", "veth", "peer", "name", "outside1")
    ns.run("ip", "addr", "add", "198.51.100.7/24", "dev", "outside0")
    for ifname in ("outside0", "outside1"):
        ns.run("ip", "link", "set", ifname, "up")
    assert ns.run(sys.executable, "-c", FROM_SNIPPET, "198.51.100.7").stdout.strip() == "403"
    assert ns.run(sys.executable, "-c", FROM_SNIPPET, "10.77.0.1").stdout.strip() == "200"
