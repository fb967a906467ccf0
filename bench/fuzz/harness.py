"""The fuzz loop: chunks of generated inputs per protocol, a watchdog per input, a tally.

Work is cut into chunks (protocol, chunk number, count). A chunk's inputs come
from `random.Random(f"{seed}/{protocol}/{chunk}")`, so the printed seed
reproduces every input; `run_chunk` is what a worker process runs, and the
unit test runs it in-process.

Watchdog: an input that uses more than `CPU_LIMIT` seconds of CPU, or blocks for
more than `WALL_LIMIT` seconds, is a hang. Interval timers (SIGPROF on CPU time,
SIGALRM on wall time) tick once per limit; a tick that finds the same input as
the tick before interrupts it (detection within 2x the limit, no syscall per
input). CPU time rather than wall time for the 1 s rule, so a machine busy with
other work cannot turn a slow moment into a false hang.

Crashes (any exception out of a target, or an answer a client could not use) are
counted, and the inputs saved under `crash_dir` with the traceback and the
coordinates that regenerate them; at most `SAVE_PER_SIGNATURE` per distinct
crash site per chunk, so one common bug does not write thousands of files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .targets import PROTOCOLS, TARGETS, BadAnswer, Target

CPU_LIMIT = 1.0
WALL_LIMIT = 10.0
SAVE_PER_SIGNATURE = 3
CHUNK = 10_000


class Hang(BaseException):
    """Raised into an input that ran past the watchdog's limit (BaseException, so no
    `except Exception` in the code under test swallows it)."""


class Watchdog:
    """Interrupts the current input after CPU_LIMIT s of CPU or WALL_LIMIT s of wall time."""

    def __init__(self, cpu_limit: float = CPU_LIMIT, wall_limit: float = WALL_LIMIT):
        self.cpu_limit, self.wall_limit = cpu_limit, wall_limit
        self.serial = 0  # bumped for every input
        self.armed = False
        self._seen: dict[int, int] = {}
        self._old: dict[int, object] = {}

    def _tick(self, signum, frame) -> None:
        if self.armed and self._seen.get(signum) == self.serial:
            self._seen[signum] = -1
            raise Hang("CPU time" if signum == signal.SIGPROF else "wall time")
        self._seen[signum] = self.serial

    def __enter__(self) -> Watchdog:
        for sig in (signal.SIGPROF, signal.SIGALRM):
            self._old[sig] = signal.signal(sig, self._tick)
        # a timer someone else had set (pytest-timeout uses ITIMER_REAL) is put back after
        self._entered = time.monotonic()
        self._old_timers = {
            which: signal.setitimer(which, limit, limit)
            for which, limit in ((signal.ITIMER_PROF, self.cpu_limit),
                                 (signal.ITIMER_REAL, self.wall_limit))}
        return self

    def __exit__(self, *exc) -> None:
        spent = time.monotonic() - self._entered
        for which, (delay, interval) in self._old_timers.items():
            if delay > 0 and which == signal.ITIMER_REAL:
                delay = max(0.001, delay - spent)
            signal.setitimer(which, delay, interval)
        for sig, old in self._old.items():
            signal.signal(sig, old)


class LoggedErrors(logging.Handler):
    """While a chunk runs: keeps the last exception the code under test logged (an HTTP
    500 is a crash, and its cause is the exception behind it) and keeps the `nixie`
    logs off the terminal (a million inputs would flood it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.last = record.exc_info[1]

    def take(self) -> BaseException | None:
        last, self.last = self.last, None
        return last

    def __enter__(self) -> LoggedErrors:
        logger = logging.getLogger("nixie")
        self._saved = (logger.handlers[:], logger.propagate)
        logger.handlers[:] = [self]
        logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("nixie")
        logger.handlers[:], logger.propagate = self._saved


@dataclass
class Tally:
    """Counts for one protocol (one chunk, or summed over chunks)."""

    protocol: str
    inputs: int = 0
    parsed: int = 0
    rejected: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0  # wall time spent in chunks (one core each)
    signatures: Counter = field(default_factory=Counter)
    saved: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.inputs += other.inputs
        self.parsed += other.parsed
        self.rejected += other.rejected
        self.crashes += other.crashes
        self.hangs += other.hangs
        self.seconds += other.seconds
        self.signatures.update(other.signatures)
        self.saved += other.saved

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def signature(exc: BaseException) -> str:
    """Where it broke: the exception type and the innermost frame in this repository (of
    the exception behind a bad answer, when there is one)."""
    if isinstance(exc, BadAnswer):
        if exc.__cause__ is None:
            return f"{type(exc).__name__}: {str(exc)[:80]}"
        return f"{str(exc)[:40]} from {signature(exc.__cause__)}"
    frames = traceback.extract_tb(exc.__traceback__)
    root = str(Path(__file__).resolve().parents[2])
    ours = [f for f in frames if f.filename.startswith(root) and "/bench/fuzz/" not in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    place = f"{os.path.relpath(where.filename, root)}:{where.lineno}" if where else "?"
    return f"{type(exc).__name__} at {place}"


_targets: dict[str, Target] = {}


def target(protocol: str, workdir: str) -> Target:
    """This process's instance of a target (built once: seeds, files, sockets), with its
    files in a directory of its own under `workdir`."""
    if protocol not in _targets:
        d = Path(workdir) / f"{protocol}-{os.getpid()}"
        d.mkdir(parents=True, exist_ok=True)
        _targets[protocol] = TARGETS[protocol](d)
    return _targets[protocol]


def close_targets() -> None:
    for t in _targets.values():
        t.close()
    _targets.clear()


def _save(crash_dir: Path, t: Target, inp, exc: BaseException, sig: str, where: str) -> str:
    crash_dir.mkdir(parents=True, exist_ok=True)
    raw = t.encode(inp)
    stem = f"{t.name}-{hashlib.sha1(raw).hexdigest()[:16]}"
    (crash_dir / f"{stem}.bin").write_bytes(raw)
    tb = "".join(traceback.format_exception(exc))
    (crash_dir / f"{stem}.txt").write_text(f"{sig}\n{where}\n\n{tb}")
    return str(crash_dir / f"{stem}.bin")


def run_chunk(protocol: str, seed: int, chunk: int, count: int, crash_dir: str,
              workdir: str) -> Tally:
    """Generate and run `count` inputs; what a worker process does with one task."""
    t = target(protocol, workdir)
    rng = random.Random(f"{seed}/{protocol}/{chunk}")
    tally = Tally(protocol)
    saved_per_sig: Counter = Counter()
    thread_time = time.thread_time
    t.reset(rng)
    started = time.monotonic()
    with Watchdog() as dog, LoggedErrors() as logged:
        for index in range(count):
            inp = t.generate(rng)
            dog.serial += 1
            cpu0 = thread_time()
            dog.armed = True
            try:
                ok = t.run(inp)
                dog.armed = False
            except Hang as e:
                dog.armed = False
                failure: BaseException | None = e
            except Exception as e:  # noqa: BLE001 - any exception is what we are looking for
                dog.armed = False
                failure = e
                if isinstance(e, BadAnswer) and e.__cause__ is None:
                    e.__cause__ = logged.take()
            else:
                failure = None
                if thread_time() - cpu0 > CPU_LIMIT:
                    failure = Hang(f"took {thread_time() - cpu0:.2f} s of CPU")
            tally.inputs += 1
            if failure is None:
                if ok:
                    tally.parsed += 1
                else:
                    tally.rejected += 1
                continue
            if isinstance(failure, Hang):
                tally.hangs += 1
                sig = f"hang ({failure})"
            else:
                tally.crashes += 1
                sig = signature(failure)
            tally.signatures[sig] += 1
            if saved_per_sig[sig] < SAVE_PER_SIGNATURE:
                saved_per_sig[sig] += 1
                tally.saved.append(_save(Path(crash_dir), t, inp, failure, sig,
                                         f"seed {seed} protocol {protocol} chunk {chunk} "
                                         f"input {index}"))
            t.reset(rng)  # the state a failure left behind is not worth fuzzing further
    tally.seconds = time.monotonic() - started
    return tally


def replay(protocol: str, raw: bytes, workdir: str) -> bool:
    """Run one saved input against a fresh target (for a crasher file)."""
    t = target(protocol, workdir)
    t.reset(random.Random(0))
    return t.run(t.decode(raw))


def tasks(protocols: Iterable[str], inputs: int, chunk_size: int) -> list[tuple[str, int, int]]:
    """(protocol, chunk, count), interleaved across protocols so every core stays busy."""
    per = {p: [(p, i, min(chunk_size, inputs - i * chunk_size))
               for i in range((inputs + chunk_size - 1) // chunk_size)] for p in protocols}
    out = []
    for i in range(max((len(v) for v in per.values()), default=0)):
        out += [v[i] for v in per.values() if i < len(v)]
    return out


def run_fuzz(protocols: Iterable[str] = PROTOCOLS, inputs: int = 1_000_000, seed: int = 0,
             jobs: int = 2, crash_dir: str | Path = "crashers", chunk_size: int = CHUNK,
             progress=None) -> dict[str, Tally]:
    """Every protocol's tally. jobs=1 runs in this process (the unit test does)."""
    protocols = list(protocols)
    totals = {p: Tally(p) for p in protocols}
    work = tasks(protocols, inputs, chunk_size)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # SQLite and files in memory
    with tempfile.TemporaryDirectory(prefix="nixie-fuzz-", dir=base) as workdir:
        if jobs <= 1:
            try:
                for p, chunk, n in work:
                    totals[p].add(run_chunk(p, seed, chunk, n, str(crash_dir), workdir))
            finally:
                close_targets()
            return totals
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_chunk, p, seed, chunk, n, str(crash_dir), workdir)
                       for p, chunk, n in work]
            for done, f in enumerate(futures, 1):
                r = f.result()
                totals[r.protocol].add(r)
                if progress is not None:
                    progress(done, len(futures), r)
    return totals
