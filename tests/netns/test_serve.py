"""`nixie serve` in its own network namespace: health, concurrent CLI, clean SIGTERM."""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab.netns import Netns, bridge, start_serve, wait_port
from tests.conftest import run_nixie
from tests.netns.serve_lab import admin_api_token, http_get, router_config


@pytest.fixture
def lan(tmp_path):
    path = router_config(tmp_path)
    with Netns() as ns:
        bridge(ns, "br-lan", "10.77.0.1/24")
        yield ns, path


def test_serve_concurrent_cli_and_sigterm(lan, tmp_path):
    ns, cfg = lan
    proc = start_serve(ns, cfg, tmp_path / "serve.log")
    try:
        assert wait_port(ns, "10.77.0.1", 8080, timeout=20), open(tmp_path / "serve.log").read()
        token = admin_api_token(cfg)
        status, body = http_get(ns, "https://10.77.0.1:8080/healthz")  # anonymous: ok only
        assert status == 200 and json.loads(body) == {"ok": True}, body
        status, body = http_get(ns, "https://10.77.0.1:8080/healthz", token)
        health = json.loads(body)
        assert status == 200 and health["ok"], body
        assert {"web", "tftp", "httpboot", "builder"} <= set(health["services"])

        # CLI verbs against the live DB, many at once, while serve writes heartbeats
        def add(i):
            return run_nixie("host", "add", f"node{i}", "--mac", f"bc:24:11:00:01:{i:02x}",
                             "--flake", "github:me/infra", config=cfg, ns=ns)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(add, range(16)))
            reads = list(pool.map(lambda _: run_nixie("host", "list", "--json", config=cfg, ns=ns),
                                  range(8)))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
        assert all(r.returncode == 0 for r in reads), [r.stderr for r in reads if r.returncode]
        names = {h["name"] for h in json.loads(run_nixie("host", "list", "--json", config=cfg, ns=ns).stdout)}
        assert names == {f"node{i}" for i in range(16)}

        time.sleep(2.5)  # one heartbeat
        st = json.loads(run_nixie("status", "--json", config=cfg, ns=ns).stdout)
        assert st["serve"]["running"] and st["serve"]["pid"] == proc.pid

        workers = json.loads(http_get(ns, "https://10.77.0.1:8080/healthz", token)[1])[
            "services"]["web"]["stats"].get("pids", [])
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = open(tmp_path / "serve.log").read()
    assert rc == 0, out
    assert took < 2.0, f"SIGTERM took {took:.2f}s"
    assert not [p for p in workers if os.path.exists(f"/proc/{p}")], "web workers outlived serve"
    assert "nixie serve stopped" in out and "clean=True" in out
    for line in out.strip().splitlines():
        assert line.startswith("ts="), f"not a structured line: {line}"
    st = json.loads(run_nixie("status", "--json", config=cfg, ns=ns).stdout)
    assert st["serve"]["running"] is False


def test_service_listens_only_on_configured_address(lan, tmp_path):
    ns, cfg = lan
    proc = start_serve(ns, cfg, tmp_path / "serve.log")
    try:
        assert wait_port(ns, "10.77.0.1", 8080, timeout=20)
        listening = ns.run("ss", "-Htln").stdout
        local = {line.split()[3] for line in listening.strip().splitlines()}
        assert "10.77.0.1:8080" in local and local <= {"10.77.0.1:8080", "10.77.0.1:8081"}, local
        assert wait_port(ns, "10.77.0.1", 8081, timeout=10)  # http boot
        udp = {line.split()[3] for line in ns.run("ss", "-Hlun").stdout.strip().splitlines()}
        assert "10.77.0.1:69" in udp and all(a.startswith("10.77.0.1:") for a in udp), udp
        assert not wait_port(ns, "127.0.0.1", 8080, timeout=0.5)
    finally:
        proc.terminate()
        proc.wait(10)
