"""The worker pool TFTP and the web UI share (netservices/workerpool.py), with a
tiny child program of real processes: each child answers UDP datagrams on the
socket the pool bound with its pid and reports how many it answered."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from netservices.workerpool import WorkerFailed, WorkerPool
from tests.conftest import ROOT, wait_for
from tests.netns.serve_lab import pid_alive

# `mode` (in the settings line) says how the child behaves:
#   serve         answer datagrams; end on SIGTERM or when stdin ends (logging which)
#   stubborn      answer datagrams; ignore SIGTERM and stdin's end
#   deaf          answer datagrams; ignore stdin's end (SIGTERM ends it)
#   exit-at-once  say ready, then exit 3
#   fail          print a line that is not JSON and exit 2 before it is ready
CHILD = r'''
import os, signal, socket, sys
from netservices.workerpool import Reports, join_pool, on_parent_gone

settings = join_pool()
mode = settings["mode"]
out = Reports()
if mode == "fail":
    print("cannot start: no such thing", flush=True)
    sys.exit(2)
why = []  # a signal handler must take no lock (see appliance/runtime/stopsignal.py)

def end(reason):
    why.append(reason)

if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: end("SIGTERM"))
if mode == "serve":
    on_parent_gone(lambda: end("stdin ended"))
sock = socket.socket(fileno=settings["fds"][0])
sock.settimeout(0.05)
out.ready()
if mode == "exit-at-once":
    sys.exit(3)
served = 0
while not why:
    try:
        data, peer = sock.recvfrom(100)
    except (TimeoutError, InterruptedError):
        continue
    served += 1
    out.stats({"served": served, "active": 1})
    sock.sendto(str(os.getpid()).encode(), peer)
out.send({"log": {"level": 20, "msg": "child stopping", "extra": {"why": why[0]}}})
out.stats({"served": served, "active": 0})
'''


def udp_listener() -> list[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return [s]


@pytest.fixture
def child(tmp_path):
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return [sys.executable, str(path)]


def make_pool(child, mode: str, size: int = 2, **kw) -> WorkerPool:
    return WorkerPool("test worker", size, child, bind=udp_listener, settings={"mode": mode},
                      gauges=frozenset({"active"}), pythonpath=str(ROOT), **kw)


class Running:
    """A pool running in a thread of its own, as a service runs under serve."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool
        self.ready = threading.Event()
        self.thread = threading.Thread(target=pool.run, kwargs={"on_ready": self.ready.set},
                                       daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        assert self.ready.wait(20), "the pool did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def port(self) -> int:
        return self.pool.sockets[0].getsockname()[1]

    def ask(self) -> int:
        """One datagram to the pool's socket; the pid of the worker that answered."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(10)
            c.sendto(b"?", ("127.0.0.1", self.port()))
            return int(c.recv(100))


def test_workers_share_the_socket_and_their_counters_are_summed(child):
    with Running(make_pool(child, "serve")) as run:
        pool = run.pool
        pids = set(pool.pids())
        assert len(pids) == 2 and os.getpid() not in pids
        answered = [run.ask() for _ in range(20)]
        assert set(answered) <= pids
        assert wait_for(lambda: pool.totals().get("served") == 20), pool.totals()
        per_worker = pool.per_worker()
        assert {pid: s["served"] for pid, s in per_worker.items() if s} == \
            {pid: answered.count(pid) for pid in set(answered)}


def test_a_killed_worker_is_replaced_and_its_last_snapshot_kept(child):
    with Running(make_pool(child, "serve")) as run:
        pool = run.pool
        first = pool.pids()
        for pid in first:  # each worker alone (the other stopped) for 5 datagrams
            others = [p for p in first if p != pid]
            for p in others:
                os.kill(p, signal.SIGSTOP)
            try:
                assert [run.ask() for _ in range(5)] == [pid] * 5
            finally:
                for p in others:
                    os.kill(p, signal.SIGCONT)
        assert wait_for(lambda: pool.totals() == {"served": 10, "active": 2}), pool.totals()
        victim = first[0]
        os.kill(victim, signal.SIGKILL)  # no last report: its last snapshot is what counts
        assert wait_for(lambda: pool.restarts == 1 and pool.alive() == 2)
        now = pool.pids()
        assert victim not in now and first[1] in now
        # served never goes back; `active` is a gauge: the dead worker's ends with it
        assert pool.totals() == {"served": 10, "active": 1}
        assert pool.retired == {"served": 5}
        answered = {run.ask() for _ in range(30)}
        assert answered <= set(now) and victim not in answered
        assert wait_for(lambda: pool.totals().get("served") == 40), pool.totals()
    assert pool.alive() == 0


def test_restart_pause_doubles_while_workers_die_young(child):
    pool = make_pool(child, "exit-at-once", size=1, restart_delay=(0.05, 0.2))
    with Running(pool):
        assert wait_for(lambda: len(pool.delays) >= 5)
    assert pool.delays[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert pool.restarts >= 4


def test_stop_ends_every_worker_sigterm_first_then_sigkill(child, caplog):
    caplog.set_level(logging.INFO, logger="nixie.workers")
    polite = make_pool(child, "serve", stop_grace=5.0)
    with Running(polite):
        procs = [w.proc for w in polite.workers.values()]
    # SIGTERM (and stdin closed) ended them: they exited on their own, reporting why
    assert [p.returncode for p in procs] == [0, 0]
    stopping = [r for r in caplog.records if r.getMessage() == "child stopping"]
    assert {r.worker for r in stopping} == {p.pid for p in procs}
    assert polite.sockets == []

    stubborn = make_pool(child, "stubborn", stop_grace=0.3)
    with Running(stubborn):
        procs = [w.proc for w in stubborn.workers.values()]
    # they ignored SIGTERM and stdin's end: killed once the grace was over
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2


def test_stdin_ending_ends_a_worker(child, caplog):
    caplog.set_level(logging.INFO, logger="nixie.workers")
    with Running(make_pool(child, "serve", size=1)) as run:
        w = run.pool.workers[0]
        w.proc.stdin.close()  # what a dead parent's pipe looks like to the child
        assert w.proc.wait(10) == 0
        assert wait_for(lambda: run.pool.restarts == 1 and run.pool.alive() == 1)
    why = [r.why for r in caplog.records
           if r.getMessage() == "child stopping" and r.worker == w.pid]
    assert why == ["stdin ended"]


PARENT = r'''
import json, socket, sys, threading
from netservices.workerpool import WorkerPool

def bind():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return [s]

pool = WorkerPool("test worker", 2, [sys.executable, sys.argv[1]], bind=bind,
                  settings={"mode": sys.argv[2]}, pythonpath=sys.argv[3])
ready = threading.Event()
threading.Thread(target=pool.run, kwargs={"on_ready": ready.set}, daemon=True).start()
ready.wait(20)
print(json.dumps(pool.pids()), flush=True)
threading.Event().wait()
'''


@pytest.mark.parametrize("mode", ["serve", "deaf"])
def test_workers_end_when_the_parent_is_killed(child, tmp_path, mode):
    """`serve` children end when stdin ends; `deaf` ones ignore that and are ended
    by the death signal (PR_SET_PDEATHSIG, set for the thread that ran the pool)."""
    parent = tmp_path / "parent.py"
    parent.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(parent), child[1], mode, str(ROOT)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
    assert wait_for(lambda: not any(pid_alive(p) for p in pids)), \
        {p: proc_status(p) for p in pids if pid_alive(p)}


def proc_status(pid: int) -> str:
    """What a failure report needs of a process that should be gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f
                            if line.split(":")[0] in ("State", "PPid", "SigPnd", "ShdPnd",
                                                      "SigBlk", "SigIgn", "SigCgt"))
    except FileNotFoundError:
        return "gone"


def test_a_worker_that_cannot_start_fails_the_start(child):
    pool = make_pool(child, "fail")
    with pytest.raises(WorkerFailed, match="cannot start: no such thing"):
        pool.run()
    assert pool.sockets == [] and pool.workers == {}


def test_a_taken_address_fails_in_the_parent(child):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]

        def bind():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                raise
            return [s]

        pool = WorkerPool("test worker", 2, child, bind=bind, settings={"mode": "serve"},
                          pythonpath=str(ROOT), bind_retry_seconds=0.2)
        with pytest.raises(OSError) as err:
            pool.run()
    assert err.value.errno == errno.EADDRINUSE
    assert pool.workers == {}  # no worker was started
