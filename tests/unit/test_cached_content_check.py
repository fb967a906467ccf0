"""Cached netboot's content check (`nixie.verify=content`): the lab stage 1's store library
(`cachedStore` in examples/lab-flake/lab.nix, read with the real `nix-instantiate`) run by
real busybox against the real HTTP boot app on loopback, a directory standing in for the
disk's root filesystem. Each "boot" is what stage 1 does once the disk is mounted: fetch
the listing and the system's own path, check the paths the disk holds (`store_check`),
fetch what it lacks (`store_fetch`). What was fetched is read from the router's
`boot.path` events."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from appliance.nix.netboot import CpioCache, ImageBuilder, PathArchives
from netservices.httpboot import BootSettings, create_boot_app, make_server
from tests.conftest import ROOT
from tests.nixeval import nix_eval, nix_reason, nix_str
from tests.unit.test_cached_netboot import CachedBackend, _path
from tests.unit.test_httpboot import BASE

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(nix_reason() is not None, reason=str(nix_reason()))]

LAB_NIX = ROOT / "examples" / "lab-flake" / "lab.nix"
# one boot, as stage 1 runs it once the disk's root filesystem is mounted at $root
BOOT = r"""
root=$1; work=$2; api=$3; tb=$4; verify=$5; fetch_tries=1
step() { echo "NIXIE-CACHED $1"; }
fail() { echo "NIXIE-CACHED-FAILED $1"; exit 1; }
. "$6"
mkdir -p $work $root/nix/store
get "$api/boot/$tb/closure" $work/closure || fail "closure: $why"
fetch_top
store_check $work/closure
store_fetch $work/closure
echo "NIXIE-CACHED-RESULT $got $kept $damaged; $checked"
"""


@pytest.fixture(scope="module")
def store_library(tmp_path_factory) -> Path:
    """The library as stage 1 gets it (the Nix string's text), and a PATH of busybox
    applets only (what the initrd's /bin holds)."""
    d = tmp_path_factory.mktemp("stage1")
    lib = d / "nixie-cached-store.sh"
    lib.write_text(nix_eval(f"(import {nix_str(LAB_NIX)} {{ src = null; }}).cachedStore"))
    (d / "bin").mkdir()
    subprocess.run(["busybox", "--install", "-s", str(d / "bin")], check=True)
    return lib


@pytest.fixture
def router(tmp_path):
    """A store of five paths (one of them links only) and the HTTP boot app serving the
    toplevel's closure on loopback: (base URL, backend, toplevel, store)."""
    store = tmp_path / "store"
    store.mkdir()
    kernel = _path(store, "1" * 32 + "-linux", {"bzImage": os.urandom(40_000)})
    busybox = _path(store, "3" * 32 + "-busybox", {"bin/busybox": os.urandom(120_000)})
    os.symlink("busybox", busybox / "bin" / "sh")
    loaders = _path(store, "5" * 32 + "-bootloaders", {"mbr.bin": os.urandom(440),
                                                       "efi/BOOTX64.EFI": os.urandom(30_000)})
    links = _path(store, "6" * 32 + "-links", {})
    os.symlink(f"{busybox}/bin/busybox", links / "busybox")
    top = _path(store, "z" * 32 + "-nixos-system-c1", {"init": b"#!/bin/sh\n"})
    (top / "kernel").symlink_to(kernel / "bzImage")
    closure = sorted(str(p) for p in (kernel, busybox, loaders, links, top))
    cache = CpioCache(tmp_path / "plain", store_dir=str(store), workers=2, compress=False)
    images = ImageBuilder(CpioCache(tmp_path / "zst", store_dir=str(store), workers=1),
                          closure=lambda t: closure if t == str(top) else [t],
                          dump_db=lambda ps: b"")
    spec = {"hosts": [], "systems": {}}
    backend = CachedBackend(spec, PathArchives(images, cache))
    app = create_boot_app(hosts=backend, events=backend, artifacts=backend, agent=backend,
                          settings=BootSettings(BASE), tftp_root=str(tmp_path))
    srv = make_server(app, "127.0.0.1:0", threads=2)
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        yield {"api": f"http://127.0.0.1:{srv.socket.getsockname()[1]}", "backend": backend,
               "top": top, "store": store, "loaders": loaders, "links": links,
               "closure": closure}
    finally:
        srv.close()
        th.join(5)
        cache.close()
        images.cache.close()


class Disk:
    """The disk's root filesystem (a directory) and the boots stage 1 makes on it."""

    def __init__(self, tmp: Path, router: dict, library: Path):
        self.root = tmp / "disk"
        self.router, self.library, self.boots = router, library, 0
        self.store = self.root / "nix" / "store"
        self.sha256 = self.root / "nix" / ".nixie" / "sha256"

    def boot(self, verify: str) -> tuple[list[str], str]:
        """One boot: (the basenames the router sent, stage 1's output)."""
        self.boots += 1
        events = self.router["backend"].events
        before = len(events)
        work = self.root.parent / f"ram-{self.boots}"  # stage 1's RAM: fresh each boot
        env = {"PATH": str(self.library.parent / "bin")}
        r = subprocess.run(["busybox", "sh", "-c", BOOT, "boot", str(self.root), str(work),
                            self.router["api"], self.router["top"].name, verify,
                            str(self.library)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0 and "NIXIE-CACHED-RESULT" in r.stdout, r.stdout + r.stderr
        sent = [e["data"]["path"] for e in events[before:] if e["kind"] == "boot.path"
                and e["data"]["status"] == "completed"]
        return sent, r.stdout

    def flip(self, rel: str, at: int, count: int = 16) -> None:
        """`count` bytes of a file inverted in place: same size, same inode, same mtime."""
        f = self.store / rel
        st = f.stat()
        data = bytearray(f.read_bytes())
        data[at:at + count] = bytes(b ^ 0xFF for b in data[at:at + count])
        f.write_bytes(bytes(data))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert f.stat().st_size == st.st_size


@pytest.fixture
def disk(tmp_path, router, store_library) -> Disk:
    d = Disk(tmp_path, router, store_library)
    sent, out = d.boot("sizes")  # the first boot: an empty disk, every path fetched
    assert sorted(sent) == sorted(Path(p).name for p in router["closure"]), out
    return d


def _result(out: str) -> str:
    return out.split("NIXIE-CACHED-RESULT ", 1)[1].strip()


def test_each_fetched_path_gets_the_sha256_of_every_regular_file(router, disk):
    """On the first boot every path moved in has sha256/<basename>: one busybox line per
    regular file (relative to the store), the hash of the router's file; none for links;
    `sha256sum -c` from the store accepts them."""
    assert sorted(p.name for p in disk.sha256.iterdir()) == \
        sorted(Path(p).name for p in router["closure"])
    for p in map(Path, router["closure"]):
        want = sorted(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(p.parent)}"
                      for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        assert sorted((disk.sha256 / p.name).read_text().splitlines()) == want, p.name
    assert (disk.sha256 / router["links"].name).read_text() == ""
    assert (disk.sha256 / router["loaders"].name).read_text().count("\n") == 2
    r = subprocess.run(["busybox", "sha256sum", "-c", str(disk.sha256 / router["loaders"].name)],
                       cwd=disk.store, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count(": OK") == 2, r.stdout + r.stderr


def test_a_same_size_flip_is_fetched_again_only_with_verify_content(router, disk):
    """16 bytes of mbr.bin inverted on the disk: the sizes check keeps the path (and says
    it checked sizes); verify=content finds it, fetches exactly that path again (besides
    the system's own, fetched every boot) and the file is the router's again."""
    loaders, top = router["loaders"].name, router["top"].name
    disk.flip(f"{loaders}/mbr.bin", 200)
    sent, out = disk.boot("sizes")
    assert sent == [top], out
    assert "NIXIE-CACHED damaged:" not in out and _result(out).startswith("0 5 0; sizes checked")
    assert (disk.store / loaders / "mbr.bin").read_bytes() != \
        (router["loaders"] / "mbr.bin").read_bytes()

    sent, out = disk.boot("content")
    assert sorted(sent) == sorted([top, loaders]), out
    assert f"NIXIE-CACHED damaged: {loaders} content differs from its sha256 sums: " \
           "fetched again" in out
    assert out.count("NIXIE-CACHED damaged:") == 1, out
    assert _result(out).startswith("1 4 1; content checked in "), out
    assert (disk.store / loaders / "mbr.bin").read_bytes() == \
        (router["loaders"] / "mbr.bin").read_bytes()


def test_intact_paths_are_kept_with_verify_content(router, disk):
    """Nothing damaged: verify=content reads every file and fetches no path again (a path
    of links only, whose list is empty, included)."""
    sent, out = disk.boot("content")
    assert sent == [router["top"].name], out
    assert "NIXIE-CACHED damaged:" not in out
    assert _result(out).startswith("0 5 0; content checked in "), out


def test_a_path_without_sums_is_fetched_again_with_verify_content(router, disk):
    """A path moved in before sums were kept (no sha256/<basename>) cannot be vouched for
    by content: fetched again with verify=content (and its sums written), kept without."""
    kernel = Path(router["closure"][0]).name
    (disk.sha256 / kernel).unlink()
    sent, out = disk.boot("sizes")
    assert sent == [router["top"].name] and not (disk.sha256 / kernel).exists(), out
    sent, out = disk.boot("content")
    assert sorted(sent) == sorted([router["top"].name, kernel]), out
    assert f"NIXIE-CACHED damaged: {kernel} has no sha256 sums: fetched again" in out
    assert (disk.sha256 / kernel).read_text().startswith(
        hashlib.sha256((router["store"] / kernel / "bzImage").read_bytes()).hexdigest())


def test_a_truncated_file_is_still_found_by_its_manifest_either_way(router, disk):
    """The manifest check runs first, with or without verify=content: a cut file is
    'differs from its manifest', not a content mismatch."""
    busybox = Path(router["closure"][1]).name
    for verify in ("sizes", "content"):
        f = disk.store / busybox / "bin" / "busybox"
        f.write_bytes(f.read_bytes()[:1000])
        sent, out = disk.boot(verify)
        assert sorted(sent) == sorted([router["top"].name, busybox]), out
        assert f"NIXIE-CACHED damaged: {busybox} differs from its manifest: fetched again" in out
        assert f.stat().st_size == 120_000
