"""Read-only TFTP for the iPXE binaries (and whatever else sits under its root)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from .server import TftpServer

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

    One loop serves every transfer and never blocks on a client. `workers` > 1
    runs more loops on the same addresses (SO_REUSEPORT; the kernel hashes each
    client to one), but they share the GIL: measured here, one loop used less
    CPU per packet (40 vs 52 us) and moved more bytes than two."""

    name = "tftp"

    def __init__(self, root: str | os.PathLike, listen: list[str], ipxe_dir: str | None = None,
                 events=None, workers: int = 1, hosts=None):
        self.root = str(root)
        self.listen = list(listen)
        self.ipxe_dir = ipxe_dir
        self.events = events
        self.hosts = hosts
        self.workers = max(1, workers)
        self._servers: list[TftpServer] = []
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        if self.ipxe_dir:
            populate_root(self.root, self.ipxe_dir)
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        servers = [TftpServer(self.root, self.listen, events=self.events, hosts=self.hosts,
                              reuse_port=self.workers > 1) for _ in range(self.workers)]
        try:
            for srv in servers:
                srv.bind()
        except OSError:
            for srv in servers:
                srv.close()
            raise
        with self._lock:
            self._servers = servers
        log.info("tftp serving", extra={"root": self.root, "listen": ",".join(self.listen),
                                        "workers": self.workers})
        threads = [threading.Thread(target=srv.serve, args=(stop,), name=f"tftp-{i}", daemon=True)
                   for i, srv in enumerate(servers[1:], 1)]
        for t in threads:
            t.start()
        try:
            servers[0].serve(stop)
        finally:
            for srv in servers[1:]:
                srv.shutdown()
            for t in threads:
                t.join(timeout=2)

    def shutdown(self) -> None:
        with self._lock:
            for srv in self._servers:
                srv.shutdown()

    def stats(self) -> dict[str, Any]:
        total: dict[str, Any] = {}
        for srv in self._servers:
            for k, v in srv.stats().items():
                total[k] = total.get(k, 0) + v
        return total
