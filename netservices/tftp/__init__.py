"""Read-only TFTP for the iPXE binaries (and whatever else sits under its root)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .server import BUSY_POLL_US
from .workers import WorkerPool, resolve_workers

log = logging.getLogger("nixie.tftp")

IPXE_BINARIES = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
# where an arm64 snponly.efi may sit in an iPXE directory (Debian: ipxe has none;
# nixpkgs: pkgsCross.aarch64-multiplatform.ipxe)
ARM64_CANDIDATES = ("snponly-arm64.efi", "arm64-efi/snponly.efi", "arm64/snponly.efi")


def populate_root(root: str | os.PathLike, ipxe_dir: str | os.PathLike) -> list[str]:
    """Copy (never symlink) the iPXE binaries into `root`; returns the names present.

    A copy is replaced only when its content differs, atomically (write + rename),
    so transfers in flight keep reading the old inode."""
    root, src_dir = Path(root), Path(ipxe_dir)
    root.mkdir(parents=True, exist_ok=True)
    wanted = {name: src_dir / name for name in IPXE_BINARIES}
    for cand in ARM64_CANDIDATES:
        if (src_dir / cand).is_file():
            wanted["snponly-arm64.efi"] = src_dir / cand
            break
    present = []
    for name, src in wanted.items():
        if not src.is_file():
            log.warning("iPXE binary missing", extra={"file": str(src)})
            continue
        dst = root / name
        data = src.read_bytes()
        if dst.is_symlink() or not dst.is_file() or dst.read_bytes() != data:
            tmp = root / f".{name}.tmp"
            tmp.write_bytes(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        present.append(name)
    return present


class TftpService:
    """The supervised service: populate the root, then serve until stopped.

    It serves from `workers` (0: one per two CPUs) worker processes sharing the
    listen addresses (workers.py), even when that is one: a worker busy-polls while
    transfers are active (server.py), which must not take the interpreter lock from
    the other services of this process."""

    name = "tftp"

    def __init__(self, root: str | os.PathLike, listen: list[str], ipxe_dir: str | None = None,
                 events=None, workers: int = 0, hosts=None, busy_poll_us: int = BUSY_POLL_US,
                 prepare: Callable[[], None] | None = None):
        self.root = str(root)
        self.prepare = prepare  # before binding: e.g. put the LAN's IPv6 address in place
        self.listen = list(listen)
        self.ipxe_dir = ipxe_dir
        self.events = events
        self.hosts = hosts
        self.workers = resolve_workers(workers)
        self.busy_poll_us = busy_poll_us
        self._server: WorkerPool | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()  # every worker of the current run serves

    def run(self, stop: threading.Event) -> None:
        if self.ipxe_dir:
            populate_root(self.root, self.ipxe_dir)
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        if self.prepare is not None:
            self.prepare()
        pool = WorkerPool(self.root, self.listen, self.workers, events=self.events,
                          hosts=self.hosts, busy_poll_us=self.busy_poll_us)
        with self._lock:
            self._server = pool
        self._ready.clear()
        pool.run(stop, on_ready=self._ready.set)

    def ready(self) -> bool:
        return self._ready.is_set()

    def shutdown(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.shutdown()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            srv = self._server
        return srv.stats() if srv is not None else {}
