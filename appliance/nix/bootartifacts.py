"""The appliance's `netservices.backend.BootArtifacts`: boot targets from the
generations table, kernel/initrd artifacts from the per-store-path CPIO cache,
and nix-netboot-serve's dispatch kinds (closure, profile, configuration, hydra).

No race between a boot script and a newer build: every artifact is addressed
by the toplevel store path the script named, never by "the host's current
system", so a generation finishing in between cannot change what a booting
machine receives.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.parse
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path

from appliance.domain import agent
from appliance.nix.command import Nix, NixFailed
from appliance.nix.netboot import (
    STORE_DIR,
    CpioCache,
    ImageBuilder,
    NotAStorePath,
    PathArchives,
    nix_closure,
    nix_dump_db,
    store_basename,
)
from appliance.state.db import Store
from netservices.backend import Artifact, BootTarget, HostRecord, Pending

log = logging.getLogger("nixie.bootartifacts")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_HYDRA_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def kernel_params(toplevel: str) -> tuple[str, ...]:
    try:
        return tuple(Path(toplevel, "kernel-params").read_text().split())
    except OSError:
        return ()


def is_bootable(toplevel: str) -> bool:
    return all(os.path.exists(os.path.join(toplevel, m)) for m in ("kernel", "initrd", "init"))


def _label(number: int, created_at: float) -> str:
    when = datetime.fromtimestamp(created_at, UTC).strftime("%Y-%m-%d %H:%M")
    return f"generation {number} ({when})"


class StoreBootArtifacts:
    """BootArtifacts over the state DB, the Nix store and the CPIO cache."""

    def __init__(self, cfg, store: Store, nix: Nix | None = None, *,
                 images: ImageBuilder | None = None):
        self.cfg = cfg
        self.store = store
        self.nix = nix or Nix.from_config(cfg)
        state = Path(cfg.state_dir)
        self.profiles_dir = state / "profiles"
        self.configurations_dir = state / "configurations"
        self.gcroots = state / "gcroots"
        self.wait_seconds = cfg.netboot.wait_seconds
        if images is None:
            cache = CpioCache(state / "cpio-cache", max_bytes=cfg.netboot.cache_max_bytes,
                              level=cfg.netboot.zstd_level, workers=cfg.netboot.workers)
            images = ImageBuilder(cache, closure=nix_closure(self.nix),
                                  dump_db=nix_dump_db(self.nix))
        self.images = images
        # cached netboot: plain per-path archives beside the zstd ones
        plain = CpioCache(images.cache.dir / "plain", max_bytes=images.cache.max_bytes,
                          workers=cfg.netboot.workers, store_dir=images.cache.store_dir,
                          compress=False)
        self.paths = PathArchives(images, plain)
        self._jobs: dict[str, Future] = {}
        self._jobs_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="resolve")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.images.cache.close()
        self.paths.cache.close()

    # ----------------------------------------------------------- targets
    def boot_targets(self, host: HostRecord) -> list[BootTarget]:
        rows = self.store.conn().execute(
            "SELECT id, number, toplevel, created_at FROM generations WHERE host_id = ? "
            "ORDER BY number DESC", (host.id,)).fetchall()
        current = host.extra.get("current_generation")
        return [BootTarget(toplevel=r["toplevel"], label=_label(r["number"], r["created_at"]),
                           generation_id=r["id"], number=r["number"],
                           kernel_params=kernel_params(r["toplevel"]),
                           current=r["number"] == current) for r in rows]

    def artifact(self, toplevel: str, name: str) -> Artifact | None:
        try:
            store_basename(toplevel)
        except NotAStorePath:
            return None
        if not os.path.isdir(toplevel) or name not in ("kernel", "initrd", "stage1"):
            return None
        try:
            if name == "kernel":
                return self.images.kernel(toplevel)
            if name == "stage1":
                return self.images.stage1(toplevel)
            return self.images.initrd(toplevel, timeout=self.wait_seconds)
        except FileNotFoundError:
            return None
        except FutureTimeout:
            raise Pending(f"building the initrd of {toplevel}", retry_after=5) from None

    def closure_listing(self, toplevel: str) -> list[tuple[str, int]] | None:
        """Cached netboot: (store path basename, archive bytes) of the toplevel's closure,
        toplevel last; None if unknown. May raise Pending while archives are built."""
        if not self._known(toplevel):
            return None
        try:
            return self.paths.listing(toplevel, timeout=self.wait_seconds)
        except FileNotFoundError:
            return None
        except FutureTimeout:
            raise Pending(f"building the store path archives of {toplevel}", retry_after=5
                          ) from None

    def path_artifact(self, toplevel: str, basename: str) -> Artifact | None:
        """Cached netboot: the plain newc archive of one path of the toplevel's closure;
        None for an unknown toplevel or a path outside its closure."""
        if not self._known(toplevel):
            return None
        try:
            return self.paths.archive(toplevel, basename, timeout=self.wait_seconds)
        except FileNotFoundError:
            return None
        except FutureTimeout:
            raise Pending(f"building the archive of {basename}", retry_after=5) from None

    @staticmethod
    def _known(toplevel: str) -> bool:
        try:
            store_basename(toplevel)
        except NotAStorePath:
            return False
        return is_bootable(toplevel)

    def issue_boot_token(self, host: HostRecord, target: BootTarget, client_ip: str,
                         purpose: str) -> str | None:
        return agent.issue_token(self.store.conn(), host.id, target.generation_id,
                                 client_ip=client_ip, purpose=purpose,
                                 ttl_seconds=self.cfg.boot.token_seconds,
                                 used_ttl_seconds=self.cfg.boot.token_used_seconds)

    # ----------------------------------------------------------- dispatch
    def resolve(self, kind: str, args: list[str]) -> BootTarget:
        if kind == "closure" and len(args) == 1:
            return self._closure(args[0])
        if kind == "profile" and len(args) == 1:
            return self._profile(args[0])
        if kind == "configuration" and len(args) == 1:
            return self._configuration(args[0])
        if kind == "hydra" and len(args) == 4:
            return self._hydra(*args)
        raise LookupError(f"no dispatch {kind!r} with {len(args)} argument(s)")

    def _target(self, toplevel: str, label: str) -> BootTarget:
        if not is_bootable(toplevel):
            raise LookupError(f"{toplevel} is not a bootable system (kernel, initrd, init)")
        return BootTarget(toplevel=toplevel, label=label, kernel_params=kernel_params(toplevel))

    def _closure(self, basename: str) -> BootTarget:
        path = f"{STORE_DIR}/{basename}"
        try:
            store_basename(path)
        except NotAStorePath:
            raise LookupError(f"{basename!r} is not a store path name") from None
        if not os.path.isdir(path):
            raise LookupError(f"{path} is not in the store")
        return self._target(path, f"closure {basename}")

    def _profile(self, name: str) -> BootTarget:
        if not _NAME.match(name):
            raise LookupError(f"{name!r} is not a profile name")
        link = self.profiles_dir / name
        if not link.is_symlink() and not link.exists():
            raise LookupError(f"no profile {name}")
        real = os.path.realpath(link)  # resolved on every boot: the profile may move on
        try:
            store_basename(real)
        except NotAStorePath:
            raise LookupError(f"profile {name} does not point at a store path") from None
        return self._target(real, f"profile {name}")

    def _job(self, key: str, fn) -> Future:
        with self._jobs_lock:
            fut = self._jobs.get(key)
            if fut is None or fut.done():
                fut = self._pool.submit(fn)
                self._jobs[key] = fut
            return fut

    def _wait(self, fut: Future, what: str):
        try:
            return fut.result(timeout=min(self.wait_seconds, 3))
        except FutureTimeout:
            raise Pending(f"building {what}", retry_after=5) from None
        except NixFailed as e:
            raise LookupError(f"{what} failed to build: {e}") from None

    def _configuration(self, name: str) -> BootTarget:
        if not _NAME.match(name):
            raise LookupError(f"{name!r} is not a configuration name")
        expr = self.configurations_dir / name / "default.nix"
        if not expr.is_file():
            raise LookupError(f"no configuration {name} ({expr})")
        link = self.gcroots / f"configuration-{name}"
        self.gcroots.mkdir(parents=True, exist_ok=True)

        def build() -> str:
            out = self.nix.run(["nix-build", str(expr), "--out-link", str(link)], timeout=3600)
            return out.split()[-1]

        toplevel = self._wait(self._job(f"configuration:{name}", build), f"configuration {name}")
        return self._target(toplevel, f"configuration {name}")

    def _hydra(self, host: str, project: str, jobset: str, job: str) -> BootTarget:
        allowed = {urllib.parse.urlsplit(u).netloc: u.rstrip("/")
                   for u in self.cfg.netboot.hydra_urls}
        if host not in allowed:
            raise LookupError(f"Hydra {host!r} is not in netboot.hydra_urls")
        for part in (project, jobset, job):
            if not _HYDRA_PART.match(part):
                raise LookupError(f"{part!r} is not a Hydra project, jobset or job name")
        base = allowed[host]
        url = f"{base}/job/{project}/{jobset}/{job}/latest"

        def fetch() -> str:
            req = urllib.request.Request(url, headers={"Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=15) as r:
                    build = json.loads(r.read(1 << 20))
            except (OSError, ValueError) as e:
                raise NixFailed(f"Hydra {url}: {e}") from None
            try:
                out = build["buildoutputs"]["out"]["path"]
                store_basename(out)
            except (KeyError, TypeError, NotAStorePath):
                raise NixFailed(f"Hydra {url} answered without a store path for output out"
                                ) from None
            self.gcroots.mkdir(parents=True, exist_ok=True)
            root = self.gcroots / f"hydra-{host.replace(':', '_')}-{project}-{jobset}-{job}"
            self.nix.run(["nix-store", "--realise", out, "--add-root", str(root),
                          "--option", "extra-substituters", base], timeout=3600)
            return out

        toplevel = self._wait(self._job(f"hydra:{url}", fetch), f"Hydra job {project}/{jobset}/{job}")
        return self._target(toplevel, f"hydra {project}/{jobset}/{job}")
