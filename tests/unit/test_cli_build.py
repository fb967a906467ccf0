"""`nixie build` without a running serve, and `build list|show|log|cancel`, as real
subprocesses on a real state DB (the streaming with a real serve and nix:
tests/netns/test_build_stream.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from appliance.config.schema import load_config
from appliance.state import kv
from appliance.state.db import Store
from tests.conftest import NIXIE, run_nixie


def _host(config_file) -> None:
    r = run_nixie("host", "add", "demo", "--mac", "52:54:00:00:00:01", "--flake", "/nonexistent",
                  config=config_file)
    assert r.returncode == 0, r.stderr


def _builds(config_file) -> list:
    return json.loads(run_nixie("build", "list", "--json", config=config_file).stdout)


def test_build_wait_without_serve_fails_at_once_and_queues_nothing(config_file):
    _host(config_file)
    try:
        r = run_nixie("build", "demo", "--wait", config=config_file, timeout=5)
    except subprocess.TimeoutExpired as e:  # it used to wait forever
        raise AssertionError("nixie build --wait still waits without serve") from e
    assert r.returncode == 1
    assert "nixie serve is not running" in r.stderr and "--here" in r.stderr
    assert _builds(config_file) == []  # nothing left queued behind
    # --json: the error as a JSON document, same exit code
    r = run_nixie("build", "demo", "--wait", "--json", config=config_file, timeout=5)
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"error": json.loads(r.stdout)["error"],
                                    "code": "serve_not_running"}


def test_a_stale_heartbeat_is_no_serve(config_file):
    """A serve that died (its last heartbeat a minute old) is not running."""
    _host(config_file)
    store = Store(load_config(config_file).db_path)
    kv.put(store.conn(), "serve.status", {"pid": 1, "ts": time.time() - 60, "state": "running",
                                          "ok": True, "services": {}})
    r = run_nixie("build", "demo", "--wait", config=config_file, timeout=5)
    assert r.returncode == 1 and "nixie serve is not running" in r.stderr


def test_a_serve_that_stops_while_we_wait_ends_the_wait(config_file):
    _host(config_file)
    store = Store(load_config(config_file).db_path)
    beat = {"pid": 1, "ts": time.time(), "state": "running", "ok": True, "services": {}}
    kv.put(store.conn(), "serve.status", beat)
    p = subprocess.Popen([*NIXIE, "build", "demo",
                          "--wait", "--config", str(config_file)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert "build 1 of demo: queued" in first
        kv.put(store.conn(), "serve.status", {**beat, "state": "stopped"})  # serve stops
        assert p.wait(timeout=10) == 1
        assert "nixie serve is not running" in p.stderr.read()
    finally:
        p.kill()


def test_build_without_wait_queues_and_warns(config_file):
    _host(config_file)
    r = run_nixie("build", "demo", config=config_file)
    assert r.returncode == 0 and "build 1 of demo: queued" in r.stdout
    assert "serve is not running" in r.stderr
    assert [b["status"] for b in _builds(config_file)] == ["queued"]
    # the old verb still lists
    assert json.loads(run_nixie("builds", "--json", config=config_file).stdout)[0]["id"] == 1


def test_show_log_and_cancel(config_file):
    _host(config_file)
    run_nixie("build", "start", "demo", config=config_file)
    run_nixie("build", "demo", config=config_file)
    cfg = load_config(config_file)
    log = Path(cfg.state_dir) / "logs" / "build-1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {i} é\n" for i in range(30)))
    conn = sqlite3.connect(cfg.db_path)
    conn.execute("UPDATE builds SET log_path = ?, status = 'running', progress = ? WHERE id = 1",
                 (str(log), json.dumps({"builds_done": 1, "builds_expected": 3})))
    conn.commit()

    r = run_nixie("build", "show", "1", config=config_file)
    assert r.returncode == 0
    assert "progress: 1/3 built" in r.stdout and "line 29 é" in r.stdout
    assert "line 9 é" not in r.stdout  # only the tail
    shown = json.loads(run_nixie("build", "show", "1", "--json", config=config_file).stdout)
    assert shown["log_tail"][-1] == "line 29 é" and len(shown["log_tail"]) == 20
    assert run_nixie("build", "log", "1", config=config_file).stdout == log.read_text()

    r = run_nixie("build", "cancel", "1", "--json", config=config_file)
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "cancelled"
    r = run_nixie("build", "cancel", "1", "--json", config=config_file)
    assert r.returncode == 1 and json.loads(r.stdout)["code"] == "conflict"
    assert run_nixie("build", "cancel", "2", config=config_file).returncode == 0
    assert [b["status"] for b in _builds(config_file)] == ["cancelled", "cancelled"]
    r = run_nixie("build", "show", "99", config=config_file)
    assert r.returncode == 1 and "no build 99" in r.stderr
    # a build log --follow of a finished build prints it and ends
    r = run_nixie("build", "log", "1", "--follow", config=config_file, timeout=10)
    assert r.returncode == 0 and "line 29" in r.stdout


def test_log_follow_json_ends_with_the_final_record(config_file):
    """`build log --follow --json`: the streamed lines on stderr, then stdout carries one
    JSON document, the finished build (as `build --wait --json` prints), and the exit
    code says how it ended."""
    _host(config_file)
    run_nixie("build", "demo", config=config_file)
    cfg = load_config(config_file)
    store = Store(cfg.db_path)
    kv.put(store.conn(), "serve.status", {"pid": 1, "ts": time.time(), "state": "running",
                                          "ok": True, "services": {}})
    log = Path(cfg.state_dir) / "logs" / "build-1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("building demo\n")
    conn = sqlite3.connect(cfg.db_path)
    conn.execute("UPDATE builds SET log_path = ?, status = 'running' WHERE id = 1", (str(log),))
    conn.commit()
    p = subprocess.Popen([*NIXIE, "build", "log", "1", "--follow", "--json", "--config",
                          str(config_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        time.sleep(1.5)  # it is following
        assert p.poll() is None, p.communicate()
        conn.execute("UPDATE builds SET status = 'failed', error = 'exit 1', finished_at = ? "
                     "WHERE id = 1", (time.time(),))
        conn.commit()
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 1, err
    final = json.loads(out)
    assert (final["id"], final["status"], final["error"]) == (1, "failed", "exit 1"), out
    assert "building demo" in err


def test_show_reads_the_tail_of_a_huge_log(config_file):
    """`build show` prints the last lines of a log of more than 1 GiB (sparse here): it
    reads from the end, not the first GiB (whose tail was NULs, not the log's end)."""
    _host(config_file)
    run_nixie("build", "demo", config=config_file)
    cfg = load_config(config_file)
    log = Path(cfg.state_dir) / "logs" / "build-1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        f.truncate((1 << 30) + 4096)
        f.seek(0, 2)
        f.write("".join(f"\nline {i} é" for i in range(30)).encode())
    conn = sqlite3.connect(cfg.db_path)
    conn.execute("UPDATE builds SET log_path = ? WHERE id = 1", (str(log),))
    conn.commit()
    shown = json.loads(run_nixie("build", "show", "1", "--json", config=config_file).stdout)
    assert shown["log_tail"] == [f"line {i} é" for i in range(10, 30)]
