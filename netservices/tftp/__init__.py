"""Read-only TFTP for the iPXE binaries (and whatever else sits under its root)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from .server import TftpServer
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

    `workers` (0: one per two CPUs) > 1 serves from that many worker processes sharing
    the listen addresses (workers.py): a Python loop is bound to one core. With
    one worker (or one CPU) the loop runs in this process, in the service's thread."""

    name = "tftp"

    def __init__(self, root: str | os.PathLike, listen: list[str], ipxe_dir: str | None = None,
                 events=None, workers: int = 0, hosts=None):
        self.root = str(root)
        self.listen = list(listen)
        self.ipxe_dir = ipxe_dir
        self.events = events
        self.hosts = hosts
        self.workers = resolve_workers(workers)
        self._server: TftpServer | WorkerPool | None = None
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        if self.ipxe_dir:
            populate_root(self.root, self.ipxe_dir)
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        if self.workers > 1:
            pool = WorkerPool(self.root, self.listen, self.workers, events=self.events,
                              hosts=self.hosts)
            with self._lock:
                self._server = pool
            pool.run(stop)
            return
        srv = TftpServer(self.root, self.listen, events=self.events, hosts=self.hosts)
        try:
            srv.bind()
        except OSError:
            srv.close()
            raise
        with self._lock:
            self._server = srv
        log.info("tftp serving", extra={"root": self.root, "listen": ",".join(self.listen),
                                        "workers": 1})
        srv.serve(stop)

    def shutdown(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.shutdown()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            srv = self._server
        if srv is None:
            return {}
        if isinstance(srv, WorkerPool):
            return srv.stats()
        return {**srv.stats(), "workers": 1}
