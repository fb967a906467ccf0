"""The build worker: takes queued builds, runs the real `nix build`, and turns
a success into a new generation of the host.

One build, start to finish:
1. claim the oldest queued row (one transaction, so two workers never take
   the same build);
2. lock the flake (`nix flake metadata`) and build the locked URL's
   `<attr>.config.system.build.toplevel` with `--log-format internal-json`,
   writing a readable log to `state_dir/logs/build-<id>.log` as it runs and
   Nix's activity messages into `builds.progress` (JSON);
3. on success: the `--out-link` under `state_dir/gcroots/` is the
   generation's GC root; one transaction inserts the generation (number =
   previous + 1), makes it the host's current one and marks the build
   succeeded; generations beyond `builder.keep_generations` lose their rows
   and roots;
4. on failure: the build row gets Nix's error text; the host keeps its
   current generation.

Builders: `local`, or `remote` (`builder.uri`, e.g. ssh-ng://nix@host) through
Nix's own remote building (`--builders`, `--max-jobs 0`) with
`builder.ssh_key`. The same service refreshes every flake's listing every
`builder.flake_refresh_seconds`.

Builds follow the flake: every `builder.flake_check_seconds` the evaluator thread checks
each on_change flake's locked revision and evaluates it again when it moved (a webhook
queues that evaluation at once); after every evaluation, and every second,
`appliance.domain.autobuild.reconcile` binds declared hosts and queues the builds of the
hosts whose system changed. A private flake's credential reaches nix through its
environment (`appliance.nix.flake_access`); its secrets are cleared from stored errors.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.domain import autobuild, events, flakes
from appliance.domain.builds import get_build, wait
from appliance.domain.dropped import drop_for_gc
from appliance.nix import flake_access
from appliance.nix.binary_cache import KeyUnusable, cache_signatures, sign_closure
from appliance.nix.command import Nix, NixFailed, check_reference
from appliance.nix.flake_eval import check_revision, evaluate_next
from appliance.state.db import Store, now, transaction

log = logging.getLogger("nixie.builder")

# Nix's internal-json activity and result types (src/libutil/logging.hh)
ACT_COPY_PATH, ACT_FILE_TRANSFER, ACT_REALISE, ACT_COPY_PATHS = 100, 101, 102, 103
ACT_BUILDS, ACT_BUILD, ACT_SUBSTITUTE = 104, 105, 108
RES_BUILD_LOG_LINE, RES_SET_PHASE, RES_PROGRESS = 101, 104, 105
RES_POST_BUILD_LOG_LINE = 107
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FINISHED_TOP_MARKERS = ("kernel", "initrd", "init")


def strip_ansi(s: str) -> str:
    return _ANSI.sub("", s)


@dataclass
class Progress:
    """Nix's activity stream folded into counts a progress bar can use."""

    builds_done: int = 0
    builds_expected: int = 0
    copies_done: int = 0
    copies_expected: int = 0
    running: list[str] = field(default_factory=list)
    phase: str | None = None
    _acts: dict[int, tuple[int, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"builds_done": self.builds_done, "builds_expected": self.builds_expected,
                "paths_fetched": self.copies_done, "paths_expected": self.copies_expected,
                "running": self.running[-8:], "phase": self.phase}

    def feed(self, line: str) -> str | None:
        """One stderr line of `nix --log-format internal-json`; returns the
        human-readable text it carries (for the log), or None."""
        if not line.startswith("@nix "):
            return line.rstrip("\n")  # plain output (e.g. from a remote builder's ssh)
        try:
            m = json.loads(line[5:])
        except ValueError:
            return line.rstrip("\n")
        action = m.get("action")
        if action == "msg":
            return strip_ansi(m.get("msg", ""))
        if action == "start":
            t, text = m.get("type"), strip_ansi(m.get("text", ""))
            self._acts[m.get("id")] = (t, text)
            if t == ACT_BUILD:
                self.running.append(text)
                return text
            if t in (ACT_COPY_PATH, ACT_SUBSTITUTE) and text:
                return text
            return None
        if action == "stop":
            t, text = self._acts.pop(m.get("id"), (None, ""))
            if t == ACT_BUILD and text in self.running:
                self.running.remove(text)
            return None
        if action == "result":
            t, fields = m.get("type"), m.get("fields") or []
            if t in (RES_BUILD_LOG_LINE, RES_POST_BUILD_LOG_LINE) and fields:
                return strip_ansi(str(fields[0]))
            if t == RES_SET_PHASE and fields:
                self.phase = str(fields[0])
            elif t == RES_PROGRESS and len(fields) >= 2:
                # Nix re-sends [done, expected, running, failed] as it learns
                # more; the latest figures are the truth (expected may shrink)
                act = self._acts.get(m.get("id"), (None, ""))[0]
                if act == ACT_BUILDS:
                    self.builds_done, self.builds_expected = int(fields[0]), int(fields[1])
                elif act == ACT_COPY_PATHS:
                    self.copies_done, self.copies_expected = int(fields[0]), int(fields[1])
        return None


def nix_error_text(lines: list[str]) -> str:
    """The error Nix printed: from the first line that starts with `error:` on."""
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("error:"):
            return "\n".join(lines[i:]).strip()
    return "\n".join(lines[-20:]).strip() or "nix build failed"


def builder_args(cfg) -> list[str]:
    """Extra `nix build` arguments for the configured builder."""
    b = cfg.builder
    if b.kind != "remote":
        return []
    host_key = base64.b64encode(b.host_key.encode()).decode() if b.host_key else "-"
    # URI, systems, SSH key, max jobs, speed factor, features, mandatory features, host key
    spec = " ".join([b.uri, ",".join(b.systems), b.ssh_key or "-", str(b.max_jobs), "1", "-", "-",
                     host_key])
    return ["--builders", spec, "--max-jobs", "0", "--option", "builders-use-substitutes", "true"]


def claim_next(conn) -> dict[str, Any] | None:
    with transaction(conn):
        r = conn.execute("SELECT * FROM builds WHERE status = 'queued' ORDER BY queued_at, id "
                         "LIMIT 1").fetchone()
        if r is None:
            return None
        conn.execute("UPDATE builds SET status = 'running', started_at = ? WHERE id = ?",
                     (now(), r["id"]))
        events.record(conn, "build.started", f"build {r['id']} of {r['host_name']} started",
                      host_id=r["host_id"], data={"build": r["id"]})
    return dict(r)


def claim(conn, build_id: int) -> dict[str, Any] | None:
    """Claim one particular queued build (None if a worker took it first)."""
    with transaction(conn):
        r = conn.execute("SELECT * FROM builds WHERE id = ? AND status = 'queued'",
                         (build_id,)).fetchone()
        if r is None:
            return None
        conn.execute("UPDATE builds SET status = 'running', started_at = ? WHERE id = ?",
                     (now(), build_id))
        events.record(conn, "build.started", f"build {build_id} of {r['host_name']} started",
                      host_id=r["host_id"], data={"build": build_id})
    return dict(r)


def build_here(cfg, store: Store, build_id: int) -> dict[str, Any]:
    """Run one queued build in the calling process (`nixie build --here`)."""
    conn = store.conn()
    b = claim(conn, build_id)
    if b is None:  # a running serve took it: follow that instead
        return wait(conn, build_id)
    worker = BuildWorker(cfg, store)
    worker.log_dir.mkdir(parents=True, exist_ok=True)
    worker.root_dir.mkdir(parents=True, exist_ok=True)
    worker.build_one(conn, b)
    return get_build(conn, build_id)


def record_success(conn, build: dict[str, Any], toplevel: str, gc_root: str, keep: int
                   ) -> tuple[dict[str, Any], list[str]]:
    """The generation, made current atomically; returns it and the GC roots to drop."""
    drop: list[str] = []
    with transaction(conn):
        host = conn.execute("SELECT * FROM hosts WHERE id = ?", (build["host_id"],)).fetchone()
        if host is None:
            conn.execute("UPDATE builds SET status = 'failed', finished_at = ?, toplevel = ?, "
                         "error = ? WHERE id = ?",
                         (now(), toplevel, "the host was removed during the build", build["id"]))
            return {}, [gc_root]
        number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM generations "
                              "WHERE host_id = ?", (host["id"],)).fetchone()[0]
        gen_id = conn.execute(
            "INSERT INTO generations (host_id, number, build_id, toplevel, gc_root, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (host["id"], number, build["id"], toplevel, gc_root, now())).lastrowid
        conn.execute("UPDATE hosts SET current_generation = ?, updated_at = ? WHERE id = ?",
                     (number, now(), host["id"]))
        conn.execute("UPDATE builds SET status = 'succeeded', finished_at = ?, toplevel = ?, "
                     "error = NULL WHERE id = ?", (now(), toplevel, build["id"]))
        old = conn.execute("SELECT id, gc_root, toplevel FROM generations WHERE host_id = ? "
                           "ORDER BY number DESC LIMIT -1 OFFSET ?", (host["id"], keep)).fetchall()
        for r in old:
            conn.execute("DELETE FROM generations WHERE id = ?", (r["id"],))
            drop_for_gc(conn, r["toplevel"])
            if r["gc_root"]:
                drop.append(r["gc_root"])
        events.record(conn, "build.succeeded",
                      f"build {build['id']} of {host['name']}: generation {number}",
                      host_id=host["id"], data={"build": build["id"], "generation": number,
                                                "toplevel": toplevel})
    return {"id": gen_id, "number": number, "toplevel": toplevel}, drop


def record_failure(conn, build: dict[str, Any], error: str) -> None:
    """The build failed; a build cancelled meanwhile stays cancelled."""
    with transaction(conn):
        if not conn.execute("UPDATE builds SET status = 'failed', finished_at = ?, error = ? "
                            "WHERE id = ? AND status != 'cancelled'",
                            (now(), error, build["id"])).rowcount:
            return
        events.record(conn, "build.failed", f"build {build['id']} of {build['host_name']} failed: "
                      + (error.splitlines() or [""])[0][:300], level="error",
                      host_id=build["host_id"], data={"build": build["id"]})


class BuildWorker:
    """Supervised service: `builder.max_jobs` builds at once, plus scheduled flake refreshes."""

    name = "builder"

    def __init__(self, cfg, store: Store, nix: Nix | None = None, *, poll: float = 0.5):
        self.cfg = cfg
        self.store = store
        self.nix = nix or Nix.from_config(cfg)
        self.poll = poll
        self.state_dir = Path(cfg.state_dir)
        self.log_dir = self.state_dir / "logs"
        self.root_dir = self.state_dir / "gcroots"
        self.max_jobs = cfg.builder.max_jobs
        self.keep = cfg.builder.keep_generations
        self.refresh_seconds = cfg.builder.flake_refresh_seconds
        self.check_seconds = cfg.builder.flake_check_seconds
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self.counts = {"succeeded": 0, "failed": 0, "cancelled": 0, "refreshes": 0}

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"running": sorted(self._procs), **self.counts}

    def reconfigure(self, cfg) -> bool:
        """New builder/Nix settings, used from the next build on (running builds keep
        theirs); `builder.max_jobs` grows or shrinks the running build threads. False
        when the state directory moved (then build a new worker)."""
        if Path(cfg.state_dir) != self.state_dir:
            return False
        self.cfg = cfg
        self.nix = Nix.from_config(cfg)
        self.keep = cfg.builder.keep_generations
        self.refresh_seconds = cfg.builder.flake_refresh_seconds
        self.check_seconds = cfg.builder.flake_check_seconds
        self.max_jobs = cfg.builder.max_jobs
        return True

    # ------------------------------------------------------------ service
    def run(self, stop: threading.Event) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self._fail_interrupted()
        workers: list[threading.Thread] = []

        def grow() -> None:
            while len(workers) < self.max_jobs:
                t = threading.Thread(target=self._worker, args=(stop, len(workers)), daemon=True,
                                     name=f"build-{len(workers)}")
                workers.append(t)
                t.start()

        grow()
        evaluator = threading.Thread(target=self._evaluator, args=(stop,), daemon=True,
                                     name="flake-eval")
        evaluator.start()
        # generations built before this key existed (a new state dir or key) are signed too
        threading.Thread(target=self.sign_generations, daemon=True, name="cache-sign").start()
        next_refresh = time.monotonic() + (self.refresh_seconds or 0)
        while not stop.wait(1.0):
            grow()
            self.stop_cancelled()
            if self.refresh_seconds and time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + self.refresh_seconds
                self.refresh_all()
            self.follow_flakes()
        self.shutdown()
        for t in [*workers, evaluator]:
            t.join(timeout=5)

    def shutdown(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop_cancelled(self) -> None:
        """Stop the nix of every running build an admin cancelled (`builds.cancel`)."""
        with self._lock:
            procs = dict(self._procs)
        if not procs:
            return
        marks = ",".join("?" * len(procs))
        for (build_id,) in self.store.conn().execute(
                f"SELECT id FROM builds WHERE status = 'cancelled' AND id IN ({marks})",
                list(procs)).fetchall():
            try:
                os.killpg(procs[build_id].pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _fail_interrupted(self) -> None:
        conn = self.store.conn()
        with transaction(conn):
            conn.execute("UPDATE builds SET status = 'failed', finished_at = ?, "
                         "error = 'interrupted: the build worker stopped while it ran' "
                         "WHERE status = 'running'", (now(),))

    def _worker(self, stop: threading.Event, index: int = 0) -> None:
        conn = self.store.new_connection()
        try:
            while not stop.is_set():
                if index >= self.max_jobs:  # max_jobs was lowered: this thread idles
                    stop.wait(self.poll)
                    continue
                b = claim_next(conn)
                if b is None:
                    stop.wait(self.poll)
                    continue
                try:
                    self.build_one(conn, b, stop)
                except Exception as e:  # noqa: BLE001 - one bad build never stops the worker
                    log.error("build crashed", exc_info=True, extra={"build": b["id"]})
                    record_failure(conn, b, f"internal error: {type(e).__name__}: {e}")
        finally:
            conn.close()

    def _evaluator(self, stop: threading.Event) -> None:
        """Evaluates queued flakes (just added, a refresh asked for, a webhook, a moved
        revision), one at a time; when none is queued, checks the revisions that are due."""
        conn = self.store.new_connection()
        try:
            while not stop.is_set():
                try:
                    if evaluate_next(conn, self.nix, str(self.state_dir)) is not None:
                        self._count("refreshes")
                        self._reconcile(conn)
                        continue
                    if self.check_revisions(conn, stop):
                        continue
                except Exception:  # noqa: BLE001 - one bad flake never stops the evaluator
                    log.error("flake evaluation crashed", exc_info=True)
                stop.wait(self.poll)
        finally:
            conn.close()

    def check_revisions(self, conn, stop: threading.Event | None = None) -> bool:
        """Check the locked revision of each on_change flake due (`builder.flake_check_seconds`);
        True when one moved (its evaluation is queued)."""
        if not self.check_seconds:
            return False
        moved = False
        for f in flakes.flakes_to_check(conn, self.check_seconds):
            if stop is not None and stop.is_set():
                break
            moved |= check_revision(conn, self.nix, f, str(self.state_dir))
        return moved

    def _reconcile(self, conn) -> None:
        r = autobuild.reconcile(conn)
        if r.bound or r.queued:
            log.info("builds follow the flake", extra={"bound": r.bound, "queued": r.queued})

    def follow_flakes(self) -> None:
        """Every second: webhooks that waited out their interval, declared hosts, changed
        systems (a host just added to an evaluated flake is built now)."""
        conn = self.store.conn()
        try:
            flakes.queue_pending_hooks(conn)
            self._reconcile(conn)
        except Exception:  # noqa: BLE001 - the builder keeps building whatever this hits
            log.error("following the flakes failed", exc_info=True)

    def refresh_all(self) -> None:
        """Every `builder.flake_refresh_seconds`: queue every flake for the evaluator
        (one place evaluates, so a scheduled refresh never races an asked-for one)."""
        flakes.request_all_evaluations(self.store.conn())

    # ------------------------------------------------------------- one build
    def build_one(self, conn, b: dict[str, Any], stop: threading.Event | None = None) -> None:
        log_path = self.log_dir / f"build-{b['id']}.log"
        conn.execute("UPDATE builds SET log_path = ? WHERE id = ?", (str(log_path), b["id"]))
        flake = conn.execute("SELECT * FROM flakes WHERE url = ?", (b["flake"],)).fetchone()
        flake = dict(flake) if flake else None
        nix = flake_access.nix_for(self.nix, self.state_dir, flake)

        clean = flake_access.redactor(self.state_dir, flake)
        with open(log_path, "a", buffering=1) as logf:
            logf.write(f"# build {b['id']} of {b['host_name']}: {b['flake']}#{b['attr']}\n")
            try:
                meta = nix.flake_metadata(b["flake"])
            except NixFailed as e:
                logf.write(clean(str(e)) + "\n")
                record_failure(conn, b, clean(str(e)))
                self._count("failed")
                return
            locked = meta.get("url") or b["flake"]
            conn.execute("UPDATE builds SET locked_url = ? WHERE id = ?", (locked, b["id"]))
            link = self.root_dir / f"{b['host_name']}-build-{b['id']}"
            installable = f"{locked}#{b['attr']}.config.system.build.toplevel"
            # the installable after `--`: a reference can never be read as an option
            args = [self.nix.exe("nix"), "build", "--json", "--log-format", "internal-json",
                    "--out-link", str(link), *self.nix.store_args(), *self.nix.option_args(),
                    *builder_args(self.cfg), "--", check_reference(installable)]
            logf.write("$ " + shlex.join(["nix", *args[1:]]) + "\n")
            toplevel, lines, rc = self._run_nix(b["id"], args, logf, conn, nix.env(), clean)
        if get_build(conn, b["id"])["status"] == "cancelled":  # its result is dropped
            link.unlink(missing_ok=True)
            self._count("cancelled")
            return
        if rc != 0 or not toplevel:
            err = nix_error_text(lines) if rc != 0 else "nix build printed no output path"
            if stop is not None and stop.is_set():
                err = "interrupted: the build worker stopped while it ran\n" + err
            record_failure(conn, b, err)
            self._count("failed")
            return
        missing = [m for m in FINISHED_TOP_MARKERS if not os.path.lexists(f"{toplevel}/{m}")]
        if missing and not self.nix.store:
            link.unlink(missing_ok=True)
            record_failure(conn, b, f"{toplevel} is not a bootable NixOS system: it has no "
                                    + ", ".join(missing))
            self._count("failed")
            return
        gen, drop = record_success(conn, b, toplevel, str(link), self.keep)
        for root in drop:
            self._drop_root(root)
        if gen:
            self.sign_for_cache(conn, [toplevel], host_id=b["host_id"])
        self._count("succeeded")
        log.info("build succeeded", extra={"build": b["id"], "host": b["host_name"],
                                           "generation": gen.get("number"), "toplevel": toplevel})

    def sign_for_cache(self, conn, toplevels: list[str], host_id: int | None = None) -> int:
        """Sign the closures of `toplevels` for the binary cache (every path, also those
        that were in the store before the key existed). A failure is logged and is a
        `cache.sign_failed` event; the build stays good."""
        try:
            n = sign_closure(self.nix, cache_signatures(self.cfg, self.nix), toplevels)
        except (KeyUnusable, NixFailed, OSError, ValueError, KeyError) as e:
            log.error("could not sign for the binary cache", extra={"error": str(e)})
            events.record(conn, "cache.sign_failed",
                          f"the binary cache cannot serve {', '.join(toplevels)}: {e}"[:2000],
                          level="error", host_id=host_id)
            return 0
        log.info("signed for the binary cache", extra={"paths": n, "toplevels": toplevels})
        return n

    def sign_generations(self) -> int:
        """Sign the closures of every generation the router keeps."""
        conn = self.store.conn()
        tops = sorted({r[0] for r in conn.execute("SELECT toplevel FROM generations")
                       if os.path.lexists(r[0])})
        return self.sign_for_cache(conn, tops) if tops else 0

    def _drop_root(self, root: str) -> None:
        p = Path(root)
        if p.parent == self.root_dir and p.is_symlink():
            p.unlink()

    def _run_nix(self, build_id: int, args: list[str], logf, conn, env: dict[str, str] | None = None,
                 clean=lambda text: text) -> tuple[str | None, list[str], int]:
        progress = Progress()
        lines: list[str] = []
        try:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env or self.nix.env(), start_new_session=True,
                                    errors="replace")
        except FileNotFoundError:
            return None, [f"error: {args[0]} is not installed"], 127
        with self._lock:
            self._procs[build_id] = proc
        stdout_chunks: list[str] = []
        reader = threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()),
                                  daemon=True)
        reader.start()
        last_save = 0.0
        try:
            for raw in proc.stderr:
                text = progress.feed(raw)
                if text is not None:
                    text = clean(text)
                    logf.write(text + "\n")
                    lines.append(text)
                    if len(lines) > 2000:
                        del lines[:1000]
                t = time.monotonic()
                if t - last_save > 0.5:
                    last_save = t
                    conn.execute("UPDATE builds SET progress = ? WHERE id = ?",
                                 (json.dumps(progress.to_dict()), build_id))
            rc = proc.wait()
            reader.join()
        finally:
            with self._lock:
                self._procs.pop(build_id, None)
        conn.execute("UPDATE builds SET progress = ? WHERE id = ?",
                     (json.dumps(progress.to_dict()), build_id))
        toplevel = None
        if rc == 0:
            try:
                toplevel = json.loads("".join(stdout_chunks))[0]["outputs"]["out"]
            except (ValueError, KeyError, IndexError, TypeError):
                toplevel = None
        return toplevel, lines, rc
