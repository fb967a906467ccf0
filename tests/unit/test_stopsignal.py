"""`StopSignal`: what `nixie serve` and the web workers stop on. A signal handler runs
in the main thread wherever it is; one that takes a lock deadlocks when it lands while
the main thread holds that lock. The attack: 20 000 signals at a main thread that waits
on the stop in a loop. With `threading.Event` in place of `StopSignal` this hangs in
most runs (seen here in 2 of 3); with `StopSignal` it must always finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from appliance.runtime.stopsignal import StopSignal
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
