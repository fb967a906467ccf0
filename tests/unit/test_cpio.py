"""newc encoding and the per-store-path CPIO cache, checked against busybox cpio."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.nix import cpio
from appliance.nix.netboot import (
    CpioCache,
    ImageBuilder,
    NotAStorePath,
    prelude_archive,
    read_artifact,
    split_zstd_frames,
    store_basename,
    write_tree_archive,
)

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")
HASH = "0" * 31 + "1"


def make_tree(root: Path) -> Path:
    """A store-path-like tree: nested dirs, executables, empty files, odd sizes, symlinks."""
    top = root / f"{HASH}-demo"
    (top / "bin").mkdir(parents=True)
    (top / "share" / "doc" / "deep").mkdir(parents=True)
    (top / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(top / "bin" / "tool", 0o755)
    (top / "empty").write_bytes(b"")
    (top / "share" / "odd").write_bytes(os.urandom(4099))
    (top / "share" / "big").write_bytes(os.urandom(3 << 20))  # crosses the 1 MiB chunking
    (top / "share" / "doc" / "deep" / "README").write_text("read me\n")
    (top / "link-rel").symlink_to("bin/tool")
    (top / "link-abs").symlink_to("/nix/store/elsewhere-x/bin/y")
    (top / "share" / "doc" / "emptydir").mkdir()
    return top


def snapshot(top: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirs, files in os.walk(top):
        for n in dirs + files:
            p = Path(dirpath) / n
            rel = str(p.relative_to(top))
            st_ = os.lstat(p)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes(), bool(st_.st_mode & 0o100))
    return out


def test_header_layout_and_padding():
    h = cpio.header("nix", stat.S_IFDIR | 0o755, 0, ino=7, nlink=2)
    assert h[:6] == b"070701"
    assert len(h) % 4 == 0
    assert int(h[6:14], 16) == 7
    assert int(h[14:22], 16) == stat.S_IFDIR | 0o755
    assert int(h[94:102], 16) == len("nix") + 1
    assert h[110:114] == b"nix\0"
    with pytest.raises(ValueError):
        cpio.header("bad\0name", 0, 0)
    with pytest.raises(ValueError):
        cpio.header("huge", stat.S_IFREG, 1 << 32)


@needs_busybox
def test_tree_archive_unpacks_with_busybox_to_the_same_tree(tmp_path):
    top = make_tree(tmp_path / "src")
    buf = io.BytesIO()
    write_tree_archive(str(top), f"nix/store/{top.name}", buf)
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(buf.getvalue())
    listing = subprocess.run([BUSYBOX, "cpio", "-t"], input=raw, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing[0] == f"nix/store/{top.name}"
    assert set(listing) == {f"nix/store/{top.name}"} | {
        f"nix/store/{top.name}/{k}" for k in snapshot(top)}
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([BUSYBOX, "cpio", "-i", "-d"], input=raw, cwd=out, check=True,
                   capture_output=True)
    assert snapshot(out / "nix" / "store" / top.name) == snapshot(top)
    # and our own decoder agrees with busybox on names and order
    assert [n for n, _m, _d in cpio.parse(raw)] == listing


@needs_busybox
def test_prelude_creates_parents_and_registration(tmp_path):
    reg = b"/nix/store/abc-x\nhash\n1\n\n0\n"
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(prelude_archive(reg))
    entries = cpio.parse(raw)
    assert [n for n, _m, _d in entries][:2] == ["nix", "nix/store"]
    assert entries[-1][2] == reg
    subprocess.run([BUSYBOX, "cpio", "-i"], input=raw, cwd=tmp_path, check=True,
                   capture_output=True)
    assert (tmp_path / "nix/.nix-netboot-serve-db/registration").read_bytes() == reg


def test_split_frames_returns_each_archive():
    c = zstandard.ZstdCompressor()
    data = c.compress(b"one") + c.compress(b"two" * 1000) + c.compress(b"")
    assert split_zstd_frames(data) == [b"one", b"two" * 1000, b""]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parse_rejects_garbage_with_valueerror_only(data):
    try:
        cpio.parse(data)
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="abcxyz-._/", min_size=1, max_size=40),
                          st.binary(max_size=70)), max_size=8))
def test_encode_parse_roundtrip(items):
    entries = [cpio.file_bytes_entry(n, d) for n, d in items]
    back = cpio.parse(cpio.encode_bytes(entries))
    assert [(n, d) for n, _m, d in back] == items


def test_store_basename_refuses_escapes():
    assert store_basename(f"/nix/store/{HASH}-demo") == f"{HASH}-demo"
    for bad in ("/nix/store/../etc/passwd", f"/nix/store/{HASH}-demo/sub", "/etc/passwd",
                f"/nix/store/{HASH}", "/nix/store/short-x", f"/nix/storex/{HASH}-a"):
        with pytest.raises(NotAStorePath):
            store_basename(bad)


def _fake_store(tmp_path: Path, n: int, size: int = 5000) -> tuple[str, list[str]]:
    store = tmp_path / "store"
    store.mkdir()
    paths = []
    for i in range(n):
        p = store / f"{i:032d}-p{i}"
        p.mkdir()
        (p / "data").write_bytes(os.urandom(size))
        paths.append(str(p))
    return str(store), paths


def test_cache_builds_each_path_once_under_concurrency(tmp_path):
    store, paths = _fake_store(tmp_path, 12)
    cache = CpioCache(tmp_path / "cache", store_dir=store, workers=2)
    try:
        results: list[list[str]] = []
        barrier = threading.Barrier(6)

        def request():
            barrier.wait()
            results.append([cache.get(p).result() for p in paths])

        threads = [threading.Thread(target=request) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 6 and all(r == results[0] for r in results)
        assert sorted(cache.built) == sorted(os.path.basename(p) for p in paths)
        assert set(cache.built.values()) == {1}
        # a second round is served from disk: nothing rebuilt
        [cache.get(p).result() for p in paths]
        assert set(cache.built.values()) == {1}
    finally:
        cache.close()


def test_cache_survives_restart_and_evicts_least_recently_used(tmp_path):
    store, paths = _fake_store(tmp_path, 6, size=20000)
    cache = CpioCache(tmp_path / "cache", store_dir=store, grace_seconds=0)
    files = [cache.get(p).result() for p in paths]
    each = os.path.getsize(files[0])
    cache.close()
    # reopen: the cache is found on disk, nothing is rebuilt
    cache = CpioCache(tmp_path / "cache", store_dir=store, grace_seconds=0,
                      max_bytes=each * 3 + each // 2)
    try:
        for i in range(len(paths)):  # used 0..5 in order, 5 most recently
            os.utime(files[i], (1000 + i, 1000 + i))
            cache._used[os.path.basename(files[i])] = 1000 + i
        cache.get(paths[0]).result()  # 0 becomes the most recently used
        assert not cache.built
        cache.evict()
        left = sorted(p.name for p in (tmp_path / "cache").glob("*.cpio.zst"))
        assert left == sorted(os.path.basename(files[i]) for i in (0, 4, 5))
        assert cache.total_bytes <= cache.max_bytes
        assert cache.evicted == 3
        # an evicted path is rebuilt on demand
        cache.get(paths[1]).result()
        assert cache.built[os.path.basename(paths[1])] == 1
    finally:
        cache.close()


def test_cache_grace_period_protects_recent_files(tmp_path):
    store, paths = _fake_store(tmp_path, 3)
    cache = CpioCache(tmp_path / "cache", store_dir=store, max_bytes=1, grace_seconds=3600)
    try:
        for p in paths:
            cache.get(p).result()
        assert cache.evict() == 0
        assert len(list((tmp_path / "cache").glob("*.cpio.zst"))) == 3
    finally:
        cache.close()


def test_missing_store_path_fails_and_can_be_retried(tmp_path):
    store, _ = _fake_store(tmp_path, 0)
    cache = CpioCache(tmp_path / "cache", store_dir=store)
    try:
        missing = f"{store}/{HASH}-gone"
        with pytest.raises(FileNotFoundError):
            cache.get(missing).result()
        os.mkdir(missing)
        assert os.path.exists(cache.get(missing).result())
        assert not list((tmp_path / "cache").glob("*.tmp*"))
    finally:
        cache.close()


def test_touch_updates_recency(tmp_path):
    store, paths = _fake_store(tmp_path, 1)
    cache = CpioCache(tmp_path / "cache", store_dir=store)
    try:
        f = cache.get(paths[0]).result()
        os.utime(f, (5, 5))
        cache._used[os.path.basename(f)] = 5
        cache.get(paths[0]).result()
        assert cache._used[os.path.basename(f)] > time.time() - 60
    finally:
        cache.close()


def _fake_system(tmp_path: Path):
    """A store with a NixOS-shaped toplevel and two more paths, and an ImageBuilder over it."""
    store, paths = _fake_store(tmp_path, 2, size=70000)
    top = Path(store) / f"{'z' * 32}-system"
    top.mkdir()
    (Path(paths[0]) / "bzImage").write_bytes(b"kernel")
    (Path(paths[1]) / "initrd").write_bytes(b"stage1 cpio")
    (top / "kernel").symlink_to(Path(paths[0]) / "bzImage")
    (top / "initrd").symlink_to(Path(paths[1]) / "initrd")
    closure = sorted([str(top), *paths])
    calls = []

    def closure_fn(t):
        calls.append(t)
        return closure

    cache = CpioCache(tmp_path / "cache", store_dir=store, workers=1)
    images = ImageBuilder(cache, closure=closure_fn,
                          dump_db=lambda ps: "".join(f"{p}\nsha256:x\n1\n\n0\n" for p in ps).encode())
    return images, str(top), closure, calls


def test_image_is_stage1_prelude_then_one_archive_per_path(tmp_path):
    images, top, closure, calls = _fake_system(tmp_path)
    try:
        art = images.initrd(top)
        assert [os.path.basename(s.path) for s in art.segments[2:]] == [
            os.path.basename(p) + ".cpio.zst" for p in closure]
        assert art.segments[0].path == os.path.realpath(f"{top}/initrd")
        assert art.size == sum(s.length for s in art.segments) == len(read_artifact(art))
        frames = split_zstd_frames(read_artifact(art)[art.segments[0].length:])
        names = [n for f in frames for n, _m, _d in cpio.parse(f)]
        assert names[:3] == ["nix", "nix/store", "nix/.nix-netboot-serve-db"]
        again = images.initrd(top)
        assert again == art and again.etag == art.etag  # same content, same etag
        # a fresh builder over the same cache asks Nix nothing: closures are kept on disk
        fresh = ImageBuilder(images.cache, closure=lambda t: 1 / 0, dump_db=lambda ps: 1 / 0)
        assert fresh.initrd(top) == art
        assert calls == [top]
        kernel = images.kernel(top)
        assert kernel.size == len(b"kernel")
        with pytest.raises(FileNotFoundError):
            images.kernel(closure[0])  # a store path that is not a system
    finally:
        images.cache.close()


def test_image_waits_at_most_the_timeout_then_finishes_in_the_background(tmp_path):
    from concurrent.futures import TimeoutError as FutureTimeout

    images, top, closure, _ = _fake_system(tmp_path)
    gate = threading.Event()
    try:
        images.cache.pool.submit(gate.wait)  # the one worker is busy
        with pytest.raises(FutureTimeout):
            images.initrd(top, timeout=0.05)
        assert not images.cache.built
        gate.set()
        art = images.initrd(top, timeout=30)
        assert len(art.segments) == 2 + len(closure)
        assert set(images.cache.built.values()) == {1}  # the waiting request built nothing twice
    finally:
        gate.set()
        images.cache.close()
