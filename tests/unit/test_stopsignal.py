"""`StopSignal`: what `nixie serve` and the web workers stop on. A signal handler runs
in the main thread wherever it is; one that takes a lock deadlocks when it lands while
the main thread holds that lock. The attack: 20 000 signals at a main thread that waits
on the stop in a loop. With `threading.Event` in place of `StopSignal` this hangs in
most runs (seen here in 2 of 3); with `StopSignal` it must always finish."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from appliance.runtime.stopsignal import StopSignal
from bench.dns.run import OURS
from tests.conftest import ROOT

FLOOD = r'''
import signal, sys, threading
from appliance.runtime.stopsignal import StopSignal

stop = StopSignal().install(signal.SIGUSR1)
main = threading.main_thread().ident

def flood():
    for _ in range(20000):
        signal.pthread_kill(main, signal.SIGUSR1)

t = threading.Thread(target=flood)
t.start()
while t.is_alive():
    stop.wait(0.0001)
t.join()
print(len(stop.signals), flush=True)
'''


def test_a_signal_flood_at_a_waiting_main_thread_cannot_deadlock_it():
    proc = subprocess.run([sys.executable, "-c", FLOOD], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    # every signal reached the handler (the kernel merges a pending duplicate, so at most 20 000)
    assert 1 <= int(proc.stdout) <= 20000


def test_wait_returns_at_the_signal_and_names_it():
    stop = StopSignal()
    assert stop.wait(0.01) is False and stop.name == ""
    old = signal.signal(signal.SIGUSR2, stop.handle)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.wait(5) is True
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert stop.is_set() and stop.name == "SIGUSR2"
    for _ in range(100_000):  # more signals than the pipe holds bytes: the handler never blocks
        stop.handle(signal.SIGTERM)
    assert stop.wait(0) is True


# runs a program (-m module or -c code) while a thread floods its main thread with
# SIGTERM once the program has a handler for it
TERM_FLOOD = r'''
import runpy, signal, sys, threading, time
main = threading.main_thread().ident

def flood():
    while signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        time.sleep(0.01)
    time.sleep(0.3)  # serving by now
    for _ in range(20000):
        signal.pthread_kill(main, signal.SIGTERM)

threading.Thread(target=flood).start()
kind, target = sys.argv[1], sys.argv[2]
sys.argv = [target, *sys.argv[3:]]
if kind == "-m":
    runpy.run_module(target, run_name="__main__")
else:
    exec(compile(target, "<program>", "exec"), {"__name__": "__main__"})
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _programs(tmp_path) -> dict[str, list[str]]:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"hosts": [], "systems": {}}))
    port = _free_port()
    return {
        "bootlab": ["-m", "tests.bootlab", "--spec", str(spec), "--listen", f"127.0.0.1:{port}",
                    "--base-url", f"http://127.0.0.1:{port}", "--tftp-root", str(tmp_path)],
        "bench-dns": ["-c", OURS.format(root=str(ROOT), n=10, server="127.0.0.1", port=port,
                                        domain="lab.nixie", upstream="127.0.0.9", workers=1)],
    }


@pytest.mark.parametrize("name", ["bootlab", "bench-dns"])
def test_the_lab_and_bench_servers_stop_on_a_sigterm_flood(tmp_path, name):
    """tests/bootlab.py (HTTP boot for the lab) and the DNS bench's server stop on
    SIGTERM through StopSignal, like serve: their own handlers set no Event and close
    no server (that took locks inside a handler); under 20 000 SIGTERMs they stop
    cleanly, exit 0."""
    argv = _programs(tmp_path)[name]
    source = (ROOT / "tests" / "bootlab.py").read_text() if name == "bootlab" else argv[1]
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
             and ast.unparse(n.func) == "signal.signal"]
    assert not calls, [ast.unparse(c) for c in calls]
    assert "StopSignal().install(signal.SIGTERM)" in source
    proc = subprocess.run([sys.executable, "-c", TERM_FLOOD, *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
