"""Freeing the Nix store of what the router no longer keeps, and the GC roots of what it does.

`collect` deletes the store paths of the generations the router dropped (table `gc_dropped`,
`appliance.domain.dropped`: beyond `builder.keep_generations`, or with their host) and of the
GC roots a removed host left under `state_dir/gcroots/`, but only those paths no root keeps
alive (`nix-store --gc --print-dead`): a path another host's generation, a user profile or
the system uses stays. It deletes nothing else, so the router never collects what it does not
own (the system's own `nix.gc` does that); it runs through the real `nix-store`
(`--delete`), so Nix's locks and liveness checks hold.

`reroot` makes the GC roots of every kept generation again (after `nixie restore`): the
archive holds no symlinks, and a root must be registered with Nix to count.

`GcService` (service `gc`) runs `collect` every `gc.interval_seconds` and when the UI or
API asked (settings key `gc.requested`), and measures disk use (`state.status.disk_use`)
every DISK_SECONDS for the health report, with warnings from `gc.disk_warn_percent`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.domain import dropped, events
from appliance.nix.command import Nix, NixFailed
from appliance.state import kv
from appliance.state.db import Store, now
from appliance.state.status import disk_use

log = logging.getLogger("nixie.gc")

REQUEST_KEY = "gc.requested"  # set by the UI/API; serve's gc service runs and clears it
LAST_KEY = "gc.last"          # the last collection's outcome
DISK_SECONDS = 60.0
STORE_DIR = "/nix/store"
BUILD_ROOT = re.compile(r"^.+-build-(\d+)$")


@dataclass
class GcResult:
    at: float
    by: str
    candidates: int = 0
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_alive: int = 0
    roots_dropped: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _orphan_roots(conn, root_dir: Path) -> list[tuple[Path, str]]:
    """Build roots (`<host>-build-<id>`) no generation holds and no queued or running build
    is about to: what a removed host or a build of a removed host left."""
    if not root_dir.is_dir():
        return []
    kept = {r[0] for r in conn.execute("SELECT gc_root FROM generations WHERE gc_root IS NOT NULL")}
    active = {r[0] for r in conn.execute("SELECT id FROM builds WHERE status IN ('queued', 'running')")}
    out = []
    for p in sorted(root_dir.iterdir()):
        m = BUILD_ROOT.match(p.name)
        if not m or not p.is_symlink() or str(p) in kept or int(m.group(1)) in active:
            continue
        out.append((p, os.readlink(p)))
    return out


def _valid(nix: Nix, paths: list[str]) -> list[str]:
    if not paths:
        return []
    invalid = set(nix.run(["nix-store", *nix.store_args(), "--check-validity", "--print-invalid",
                           *paths]).split())
    return [p for p in paths if p not in invalid]


def _nar_sizes(nix: Nix, paths: list[str]) -> int:
    if not paths:
        return 0
    info = json.loads(nix.run(["nix", "path-info", "--json", *nix.store_args(), "--", *paths]))
    return sum(int(i.get("narSize") or 0) for i in info)


def _delete(nix: Nix, paths: list[str]) -> list[str]:
    """Delete `paths` (dead ones); one at a time when the batch fails (one became alive)."""
    try:
        nix.run(["nix-store", *nix.store_args(), "--delete", *paths])
        return paths
    except NixFailed:
        done = []
        for p in paths:
            try:
                nix.run(["nix-store", *nix.store_args(), "--delete", p])
                done.append(p)
            except NixFailed as e:
                log.info("store path kept", extra={"path": p, "reason": str(e)[:300]})
        return done


def collect(cfg, store: Store, nix: Nix | None = None, *, by: str = "cli") -> GcResult:
    """Delete the dead store paths of dropped generations and orphaned build roots."""
    nix = nix or Nix.from_config(cfg)
    conn = store.conn()
    res = GcResult(at=now(), by=by)
    tops = dropped.dropped(conn)
    for link, target in _orphan_roots(conn, Path(cfg.state_dir) / "gcroots"):
        link.unlink(missing_ok=True)
        res.roots_dropped.append(link.name)
        tops.append(target)
    tops = sorted(set(tops) - {r[0] for r in conn.execute("SELECT toplevel FROM generations")})
    res.candidates = len(tops)
    try:
        valid = _valid(nix, tops)
        closure = set(nix.run(["nix-store", *nix.store_args(), "-qR", *valid]).split()) if valid else set()
        dead = set(nix.run(["nix-store", *nix.store_args(), "--gc", "--print-dead"]).split()) if closure else set()
        doomed = sorted(closure & dead)
        res.kept_alive = len(closure) - len(doomed)
        if doomed:
            size = _nar_sizes(nix, doomed)
            res.deleted = _delete(nix, doomed)
            res.freed_bytes = size if len(res.deleted) == len(doomed) else _estimate(size, doomed, res.deleted)
        dropped.forget(conn, tops)
    except (NixFailed, OSError, ValueError) as e:
        res.error = str(e)[:2000]
    kv.put(conn, LAST_KEY, res.to_dict() | {"deleted": len(res.deleted)})
    if res.error:
        events.record(conn, "gc.failed", f"Nix store garbage collection failed: {res.error}",
                      level="error")
    else:
        events.record(conn, "gc.done", f"Nix store garbage collection ({by}): {len(res.deleted)} "
                      f"paths deleted, {res.freed_bytes} bytes freed",
                      data={"deleted": len(res.deleted), "freed_bytes": res.freed_bytes,
                            "candidates": res.candidates, "roots_dropped": res.roots_dropped})
    log.info("nix store gc", extra={"deleted": len(res.deleted), "freed_bytes": res.freed_bytes,
                                    "error": res.error})
    return res


def _estimate(size: int, doomed: list[str], deleted: list[str]) -> int:
    return size * len(deleted) // max(len(doomed), 1)


def reroot(cfg, store: Store, nix: Nix | None = None) -> dict[str, Any]:
    """GC roots for every kept generation whose system is in the store (registered with Nix:
    `nix-store --realise --add-root --indirect`); the others are listed as missing."""
    nix = nix or Nix.from_config(cfg)
    conn = store.conn()
    root_dir = Path(cfg.state_dir) / "gcroots"
    root_dir.mkdir(parents=True, exist_ok=True)
    rows = conn.execute("SELECT g.id, g.number, g.toplevel, g.gc_root, h.name FROM generations g "
                        "JOIN hosts h ON h.id = g.host_id ORDER BY h.name, g.number").fetchall()
    valid = set(_valid(nix, sorted({r["toplevel"] for r in rows if r["toplevel"]})))
    made, missing = 0, []
    for r in rows:
        if r["toplevel"] not in valid:
            missing.append(f"{r['name']} generation {r['number']}")
            continue
        link = Path(r["gc_root"]) if r["gc_root"] else root_dir / f"{r['name']}-generation-{r['number']}"
        if link.parent != root_dir:  # a path from elsewhere: never make links outside gcroots/
            link = root_dir / f"{r['name']}-generation-{r['number']}"
        if link.is_symlink():
            link.unlink()
        nix.run(["nix-store", *nix.store_args(), "--realise", r["toplevel"], "--add-root", str(link),
                 "--indirect"])
        conn.execute("UPDATE generations SET gc_root = ? WHERE id = ?", (str(link), r["id"]))
        made += 1
    return {"made": made, "missing": missing}


def request(conn) -> None:
    """Ask serve's gc service to collect now (the UI and API: no request runs nix)."""
    kv.put(conn, REQUEST_KEY, {"at": now()})


def is_requested(conn) -> bool:
    return bool(kv.get(conn, REQUEST_KEY))


def last(conn) -> dict[str, Any] | None:
    return kv.get(conn, LAST_KEY)


class GcService:
    """serve's service `gc` (see the module's doc)."""

    name = "gc"

    def __init__(self, cfg, store: Store, nix: Nix | None = None, *, poll: float = 1.0):
        self.cfg, self.store, self.poll = cfg, store, poll
        self.nix = nix or Nix.from_config(cfg)
        self.interval = cfg.gc.interval_seconds
        self.warn_percent = cfg.gc.disk_warn_percent
        self.disk: dict[str, Any] | None = None
        self.runs = 0
        self.last_error: str | None = None

    def stats(self) -> dict[str, Any]:
        return {"disk": self.disk, "runs": self.runs, "last_error": self.last_error,
                "interval_seconds": self.interval}

    def measure(self) -> dict[str, Any]:
        self.disk = disk_use(self.cfg.state_dir, STORE_DIR, self.warn_percent)
        return self.disk

    def due(self, conn, started: float) -> str | None:
        if is_requested(conn):
            return "request"
        if self.interval <= 0:
            return None
        prev = last(conn) or {}
        since = max(float(prev.get("at") or 0), started)
        return "schedule" if now() - since >= self.interval else None

    def run(self, stop: threading.Event) -> None:
        started, measured = now(), -DISK_SECONDS
        while not stop.is_set():
            conn = self.store.conn()
            if time.monotonic() - measured >= DISK_SECONDS:
                self.measure()
                measured = time.monotonic()
            by = self.due(conn, started)
            if by:
                kv.delete(conn, REQUEST_KEY)
                res = collect(self.cfg, self.store, self.nix, by=by)
                self.runs += 1
                self.last_error = res.error
                self.measure()
                measured = time.monotonic()
            stop.wait(self.poll)
