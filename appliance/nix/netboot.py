"""Netboot images from a per-store-path CPIO cache.

The image of a system is its own stage-1 `initrd` followed by:
1. a small "prelude" archive that creates `nix`, `nix/store` (the kernel does
   not create missing parents) and `nix/.nix-netboot-serve-db/registration`
   (`nix-store --dump-db` of the closure, for `nix-store --load-db`);
2. one zstd-compressed newc archive per closure path, cached on disk under
   `<cache_dir>/<store path basename>.cpio.zst` and shared by every image.

Store paths are immutable, so a cached archive never goes stale; a new
generation only costs the archives of the paths that changed. Archives are
built in a thread pool (zstd releases the GIL), each exactly once however many
requests want it at once (one future per path). The cache has a size limit
with least-recently-used eviction; files used within `grace_seconds` are never
evicted, so an image being streamed keeps its segments.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import zstandard

from appliance.nix import cpio
from netservices.backend import Artifact, Segment

log = logging.getLogger("nixie.netboot")

STORE_DIR = "/nix/store"
REGISTRATION = "nix/.nix-netboot-serve-db/registration"
_BASENAME = re.compile(r"^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$")
_CHUNK = 1 << 20
_BIG_PATH = 32 << 20  # paths bigger than this also use zstd's own threads


class NotAStorePath(ValueError):
    pass


def store_basename(path: str, store_dir: str = STORE_DIR) -> str:
    """The basename of a top-level store path; raises NotAStorePath for anything else."""
    p = str(path)
    if not p.startswith(store_dir + "/"):
        raise NotAStorePath(f"{p!r} is not under {store_dir}")
    base = p[len(store_dir) + 1:]
    if not _BASENAME.match(base):
        raise NotAStorePath(f"{p!r} is not a store path")
    return base


def write_path_archive(store_path: str, out, *, level: int = 3, threads: int = 0) -> int:
    """Write one zstd-compressed newc archive of `store_path` (entries named
    nix/store/<base>/...) to the binary file `out`; returns bytes written."""
    base = store_basename(store_path)
    return write_tree_archive(store_path, f"nix/store/{base}", out, level=level, threads=threads)


def write_tree_archive(path: str, archive_name: str, out, *, level: int = 3,
                       threads: int = 0, compress: bool = True) -> int:
    """Write `path` (file, dir or symlink) as a zstd newc archive whose entries
    are named `archive_name`/...; returns bytes written. `compress=False`: a plain
    newc archive (what busybox `cpio -i` reads: it has no zstd)."""
    writer = (zstandard.ZstdCompressor(level=level, threads=threads).stream_writer(
        out, closefd=False) if compress else contextlib.nullcontext(out))
    with writer as w:
        ino = 0
        buf = bytearray()
        for e in cpio.walk_entries(path, archive_name):
            ino += 1
            buf += cpio.header(e.name, e.mode, e.size, ino=ino,
                               nlink=2 if stat.S_ISDIR(e.mode) else 1)
            if e.link_target is not None:
                buf += e.link_target.encode() + cpio.data_padding(e.size)
            elif e.source is not None:
                with open(e.source, "rb") as f:
                    if e.size <= _CHUNK:
                        data = f.read()
                        if len(data) != e.size:
                            raise OSError(f"{e.source} changed size while archiving")
                        buf += data
                    else:
                        w.write(bytes(buf))
                        buf.clear()
                        left = e.size
                        while left:
                            chunk = f.read(min(_CHUNK, left))
                            if not chunk:
                                raise OSError(f"{e.source} shrank while archiving")
                            w.write(chunk)
                            left -= len(chunk)
                buf += cpio.data_padding(e.size)
            if len(buf) >= _CHUNK:
                w.write(bytes(buf))
                buf.clear()
        buf += cpio.trailer()
        w.write(bytes(buf))
    return out.tell()


def prelude_archive(registration: bytes) -> bytes:
    """The first archive: parent directories and the Nix DB registration."""
    entries: list[tuple[cpio.Entry, bytes | None]] = [
        (cpio.dir_entry("nix"), None),
        (cpio.dir_entry("nix/store", 0o1775), None),
        (cpio.dir_entry("nix/.nix-netboot-serve-db"), None),
        cpio.file_bytes_entry(REGISTRATION, registration),
    ]
    return zstandard.ZstdCompressor(level=3).compress(cpio.encode_bytes(entries))


def _path_size(path: str) -> int:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class CpioCache:
    """The on-disk cache of per-store-path archives (`compress=False`: plain newc
    archives, `<base>.cpio`, what cached netboot's busybox stage 1 unpacks)."""

    def __init__(self, cache_dir: str | os.PathLike, *, max_bytes: int = 20 << 30,
                 level: int = 1, workers: int = 0, grace_seconds: float = 300,
                 store_dir: str = STORE_DIR, compress: bool = True):
        self.store_dir = store_dir
        self.compress = compress
        self.suffix = ".cpio.zst" if compress else ".cpio"
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.level = level
        self.grace_seconds = grace_seconds
        self.pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2,
                                       thread_name_prefix="cpio")
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[str]] = {}
        self.built: Counter[str] = Counter()  # basename -> times built (tests count these)
        self.evicted = 0
        self._sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        for p in self.dir.glob(f"*{self.suffix}"):
            st = p.stat()
            self._sizes[p.name] = st.st_size
            self._used[p.name] = st.st_mtime
        self._total = sum(self._sizes.values())
        for p in self.dir.glob("*.tmp*"):  # a crash mid-build
            p.unlink(missing_ok=True)

    def file_for(self, store_path: str) -> Path:
        return self.dir / f"{store_basename(store_path, self.store_dir)}{self.suffix}"

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    def get(self, store_path: str) -> Future[str]:
        """A future of the archive's file path; built at most once at a time."""
        ready, pending = self.acquire([store_path])
        if pending:
            return next(iter(pending.values()))
        done: Future[str] = Future()
        done.set_result(str(self.dir / next(iter(ready))))
        return done

    def acquire(self, store_paths: list[str]) -> tuple[dict[str, int], dict[str, Future[str]]]:
        """For each path: its cached archive's size (by file name), or a future of
        the archive being built (started here if nobody builds it yet).

        The in-memory index is the truth on the hot path; a file's mtime (the
        recency that survives a restart) is refreshed at most once a minute."""
        now = time.time()
        names = [self.file_for(p).name for p in store_paths]
        ready: dict[str, int] = {}
        pending: dict[str, Future[str]] = {}
        touch: list[tuple[str, str]] = []
        with self._lock:
            for p, name in zip(store_paths, names, strict=True):
                fut = self._inflight.get(name)
                if fut is None and name in self._sizes:
                    ready[name] = self._sizes[name]
                    if now - self._used.get(name, 0) > 60:
                        touch.append((p, name))
                    self._used[name] = now
                    continue
                if fut is None:
                    fut = self.pool.submit(self._build, p, self.dir / name)
                    self._inflight[name] = fut
                pending[name] = fut
        for p, name in touch:
            try:
                os.utime(self.dir / name, (now, now))
            except FileNotFoundError:  # removed behind our back: build it again
                with self._lock:
                    if self._sizes.pop(name, None) is not None:
                        self._total -= ready.pop(name)
                    fut = self._inflight.get(name)
                    if fut is None:
                        fut = self.pool.submit(self._build, p, self.dir / name)
                        self._inflight[name] = fut
                ready.pop(name, None)
                pending[name] = fut
        return ready, pending

    def size_of(self, name: str) -> int:
        with self._lock:
            return self._sizes[name]

    def _build(self, store_path: str, target: Path) -> str:
        try:
            if not os.path.lexists(store_path):
                raise FileNotFoundError(f"{store_path} is not in the store")
            threads = -1 if _path_size(store_path) > _BIG_PATH else 0
            tmp = target.with_name(f"{target.name}.tmp{threading.get_ident()}")
            try:
                with open(tmp, "wb") as f:
                    size = write_tree_archive(
                        store_path, f"nix/store/{store_basename(store_path, self.store_dir)}",
                        f, level=self.level, threads=threads, compress=self.compress)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            with self._lock:
                self.built[target.name.removesuffix(self.suffix)] += 1
                self._total += size - self._sizes.get(target.name, 0)
                self._sizes[target.name] = size
                self._used[target.name] = time.time()
            return str(target)
        finally:
            with self._lock:
                self._inflight.pop(target.name, None)

    def evict(self, keep: set[str] = frozenset()) -> int:
        """Remove least recently used archives until under the limit; returns bytes freed."""
        freed = 0
        now = time.time()
        with self._lock:
            total = self._total
            if total <= self.max_bytes:
                return 0
            for name in sorted(self._sizes, key=lambda n: self._used.get(n, 0)):
                if total <= self.max_bytes:
                    break
                if name in keep or name in self._inflight:
                    continue
                if now - self._used.get(name, 0) < self.grace_seconds:
                    continue
                size = self._sizes.pop(name)
                self._used.pop(name, None)
                (self.dir / name).unlink(missing_ok=True)
                total -= size
                self._total -= size
                freed += size
                self.evicted += 1
        if freed:
            log.info("cpio cache eviction", extra={"freed": freed, "total": total})
        return freed

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class ImageBuilder:
    """Kernel and initrd artifacts of a toplevel, from the CPIO cache."""

    def __init__(self, cache: CpioCache, *, closure: Callable[[str], list[str]],
                 dump_db: Callable[[list[str]], bytes]):
        self.cache = cache
        self.store_dir = cache.store_dir
        self._closure_fn = closure
        self._dump_db = dump_db
        self._closures: dict[str, list[str]] = {}  # toplevel -> closure (immutable)
        self._prelude_lock = threading.Lock()
        self.prelude_dir = cache.dir / "prelude"
        self.prelude_dir.mkdir(exist_ok=True)

    def closure(self, toplevel: str) -> list[str]:
        """The toplevel's closure: asked of Nix once, then remembered in memory and
        on disk (a store path's closure never changes)."""
        paths = self._closures.get(toplevel)
        if paths is not None:
            return paths
        saved = self.prelude_dir / f"{store_basename(toplevel, self.store_dir)}.closure"
        try:
            paths = saved.read_text().split("\n")
        except FileNotFoundError:
            paths = sorted(self._closure_fn(toplevel))
            for p in paths:
                store_basename(p, self.store_dir)  # refuse anything Nix would not print
            tmp = saved.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_text("\n".join(paths))
            os.replace(tmp, saved)
        self._closures[toplevel] = paths
        return paths

    def _member(self, toplevel: str, name: str) -> str:
        store_basename(toplevel, self.store_dir)
        link = os.path.join(toplevel, name)
        real = os.path.realpath(link)
        if not real.startswith(self.store_dir + "/") or not os.path.isfile(real):
            raise FileNotFoundError(f"{toplevel} has no {name}")
        return real

    def kernel(self, toplevel: str) -> Artifact:
        real = self._member(toplevel, "kernel")
        return file_artifact("kernel", real)

    def stage1(self, toplevel: str) -> Artifact:
        """The system's own stage-1 initrd alone (cached netboot: the closure comes later,
        path by path, onto the host's disk)."""
        real = self._member(toplevel, "initrd")
        return file_artifact("stage1", real)

    def prelude(self, toplevel: str) -> str:
        target = self.prelude_dir / f"{store_basename(toplevel, self.store_dir)}.cpio.zst"
        if target.exists():
            return str(target)
        with self._prelude_lock:
            if not target.exists():
                data = prelude_archive(self._dump_db(self.closure(toplevel)))
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
        return str(target)

    def initrd(self, toplevel: str, timeout: float | None = None) -> Artifact:
        """The full image; waits up to `timeout` s for missing archives
        (raises concurrent.futures.TimeoutError, the builds go on)."""
        stage1 = self._member(toplevel, "initrd")
        closure = self.closure(toplevel)
        ready, pending = self.cache.acquire(closure)
        prelude = self.prelude(toplevel)  # meanwhile the pool builds what is missing
        _wait_all(self.cache, ready, pending, timeout)
        d = str(self.cache.dir)
        segs = [Segment(stage1, 0, os.path.getsize(stage1)),
                Segment(prelude, 0, os.path.getsize(prelude))]
        for p in closure:
            name = f"{store_basename(p, self.cache.store_dir)}.cpio.zst"
            segs.append(Segment(f"{d}/{name}", 0, ready[name]))
        if self.cache.total_bytes > self.cache.max_bytes:
            self.cache.evict(keep=set(ready))
        size = sum(s.length for s in segs)
        etag = hashlib.sha256(("\n".join(f"{s.path}:{s.length}" for s in segs)
                               + f"\nlevel={self.cache.level}").encode()).hexdigest()[:32]
        return Artifact("initrd", tuple(segs), size, etag)


def file_artifact(name: str, path: str, size: int | None = None) -> Artifact:
    """One whole file as an Artifact, its etag from its path and size (store files and
    cached archives never change in place)."""
    size = os.path.getsize(path) if size is None else size
    return Artifact(name, (Segment(path, 0, size),), size,
                    etag=hashlib.sha256(f"{path}:{size}".encode()).hexdigest()[:32])


def _wait_all(cache: CpioCache, ready: dict[str, int], pending: dict[str, Future[str]],
              timeout: float | None) -> dict[str, int]:
    """`ready` completed with the sizes of the `pending` archives, waiting up to `timeout`
    s in all (raises concurrent.futures.TimeoutError, the builds go on)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for name, fut in pending.items():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        fut.result(timeout=left)
        ready[name] = cache.size_of(name)
    return ready


MEMBER_TOPLEVELS = 4  # toplevels whose closure index PathArchives keeps (a few boot at once)


class PathArchives:
    """Cached netboot: a toplevel's closure as one plain newc archive per store path
    (`<base>.cpio`, what busybox `cpio -i` unpacks), so a host keeping `/nix/store` on its
    disk fetches only the paths it lacks. Only paths of the named toplevel's closure are
    served: any other name is refused before anything is built or opened."""

    def __init__(self, images: ImageBuilder, cache: CpioCache,
                 keep_toplevels: int = MEMBER_TOPLEVELS):
        self.images = images
        self.cache = cache
        self.store_dir = cache.store_dir
        # toplevel -> {basename: store path} of its closure, for the keep_toplevels most
        # recently used: made once per toplevel, not on every path fetch (a closure
        # never changes)
        self._members = functools.lru_cache(maxsize=keep_toplevels)(self._closure_members)

    def _closure_members(self, toplevel: str) -> dict[str, str]:
        return {store_basename(p, self.store_dir): p for p in self.images.closure(toplevel)}

    def listing(self, toplevel: str, timeout: float | None = None) -> list[tuple[str, int]]:
        """(basename, archive bytes) of every closure path, toplevel last; builds the
        missing archives (waits up to `timeout` s, else concurrent.futures.TimeoutError)."""
        members = self._members(toplevel)
        ready, pending = self.cache.acquire(list(members.values()))
        sizes = _wait_all(self.cache, ready, pending, timeout)
        top = store_basename(toplevel, self.store_dir)
        names = sorted(members, key=lambda b: (b == top, b))
        if self.cache.total_bytes > self.cache.max_bytes:
            self.cache.evict(keep=set(sizes))
        return [(b, sizes[f"{b}{self.cache.suffix}"]) for b in names]

    def archive(self, toplevel: str, basename: str, timeout: float | None = None
                ) -> Artifact | None:
        """The archive of `basename`, one path of the toplevel's closure; None for any
        other name."""
        path = self._members(toplevel).get(basename)
        if path is None:
            return None
        ready, pending = self.cache.acquire([path])
        sizes = _wait_all(self.cache, ready, pending, timeout)
        name = f"{basename}{self.cache.suffix}"
        return file_artifact("path", str(self.cache.dir / name), sizes[name])


def nix_closure(nix) -> Callable[[str], list[str]]:
    return lambda toplevel: nix.run(["nix-store", "-qR", toplevel]).split()


def nix_dump_db(nix) -> Callable[[list[str]], bytes]:
    def dump(paths: list[str]) -> bytes:
        return nix.run(["nix-store", "--dump-db", *paths]).encode()

    return dump


def read_artifact(a: Artifact) -> bytes:
    """The artifact's bytes (tests and small tools; servers stream segments)."""
    out = bytearray()
    for s in a.segments:
        with open(s.path, "rb") as f:
            f.seek(s.offset)
            out += f.read(s.length)
    return bytes(out)


def split_zstd_frames(data: bytes) -> list[bytes]:
    """Decompress concatenated zstd frames one by one (each is one archive)."""
    out = []
    dctx = zstandard.ZstdDecompressor()
    pos = 0
    while pos < len(data):
        obj = dctx.decompressobj()
        chunk = obj.decompress(data[pos:])
        out.append(chunk)
        pos = len(data) - len(obj.unused_data)
    return out
