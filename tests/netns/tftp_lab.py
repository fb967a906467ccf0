"""Our TFTP server (`python -m netservices.tftp`) in one namespace, a client
namespace joined to it by a veth pair: what the TFTP netns tests share."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.netns import Netns, veth
from tests.conftest import ROOT


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class TftpLab:
    client: Netns
    proc: subprocess.Popen

    def stop(self) -> dict:
        """SIGTERM the server; it prints its counters as its last line."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return json.loads(out.strip().splitlines()[-1])


@contextmanager
def tftp_lab(root: Path, server: str, client: str, *args: str) -> Iterator[TftpLab]:
    """The server on `server`:69 serving `root` (plus the iPXE binaries), with
    extra command-line `args`; cleaned up whatever happens."""
    srv, cli = Netns(), Netns()
    proc = None
    try:
        veth(srv, "eth0", cli, "eth0")
        srv.run("ip", "addr", "add", f"{server}/24", "dev", "eth0")
        cli.run("ip", "addr", "add", f"{client}/24", "dev", "eth0")
        proc = srv.popen(sys.executable, "-m", "netservices.tftp", "--root", str(root),
                         "--listen", f"{server}:69", "--ipxe-dir", "/usr/lib/ipxe", *args,
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        yield TftpLab(cli, proc)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.close()  # ends whatever is left in the namespace
        cli.close()
