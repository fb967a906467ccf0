"""Network namespaces for the lab and the tests: create, wire, run in, clean up.

Names are unique on the machine (they carry the creating process's pid) so
parallel test runs never share a namespace, and `cleanup_stale()` removes
namespaces whose creator is gone.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "nx"
ROOT = Path(__file__).resolve().parent.parent  # the checkout: where `-m appliance.cli.main` runs
_counter = itertools.count(1)


def sh(*cmd: str, check: bool = True, input: str | None = None, timeout: float = 30
       ) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, input=input,
                          timeout=timeout)


def unique(tag: str = "") -> str:
    """A name like nx1234t3 (<= 15 chars, fits an interface name too)."""
    name = f"{PREFIX}{os.getpid() % 100000}{tag[:2]}{next(_counter)}"
    return name[:15]


class Netns:
    """A network namespace this process made; `close()` kills what runs in it and deletes it."""

    def __init__(self, name: str | None = None):
        self.name = name or unique("n")
        sh("ip", "netns", "add", self.name)
        Path(f"/run/nixie-netns/{self.name}").parent.mkdir(parents=True, exist_ok=True)
        Path(f"/run/nixie-netns/{self.name}").write_text(str(os.getpid()))
        self.run("ip", "link", "set", "lo", "up")

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, input: str | None = None
            ) -> subprocess.CompletedProcess:
        return sh(*self.argv(*cmd), check=check, timeout=timeout, input=input)

    def popen(self, *cmd: str, **kw) -> subprocess.Popen:
        kw.setdefault("start_new_session", True)
        return subprocess.Popen(self.argv(*cmd), **kw)

    def pids(self) -> list[int]:
        r = sh("ip", "netns", "pids", self.name, check=False)
        return [int(p) for p in r.stdout.split()]

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 2
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        sh("ip", "netns", "delete", self.name, check=False)
        Path(f"/run/nixie-netns/{self.name}").unlink(missing_ok=True)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def veth(a: Netns | None, a_if: str, b: Netns | None, b_if: str) -> None:
    """A veth pair with one end in each namespace (None: the host's)."""
    tmp_a, tmp_b = unique("va"), unique("vb")
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    for tmp, ns, final in ((tmp_a, a, a_if), (tmp_b, b, b_if)):
        if ns is not None:
            sh("ip", "link", "set", tmp, "netns", ns.name)
            ns.run("ip", "link", "set", tmp, "name", final)
            ns.run("ip", "link", "set", final, "up")
        else:
            sh("ip", "link", "set", tmp, "name", final)
            sh("ip", "link", "set", final, "up")


def bridge(ns: Netns, name: str, address: str | None = None) -> None:
    ns.run("ip", "link", "add", name, "type", "bridge")
    ns.run("ip", "link", "set", name, "type", "bridge", "forward_delay", "0")
    if address:
        ns.run("ip", "addr", "add", address, "dev", name)
    ns.run("ip", "link", "set", name, "up")


def enslave(ns: Netns, ifname: str, bridge_name: str) -> None:
    ns.run("ip", "link", "set", ifname, "master", bridge_name)
    ns.run("ip", "link", "set", ifname, "up")


def bridge_port(router: Netns, bridge_name: str, port: str, peer: Netns, peer_if: str = "eth0",
                address: str | None = None) -> None:
    """Wire `peer` to a bridge in `router`: a veth whose `port` end joins the bridge and
    whose `peer_if` end, in `peer`, gets `address` (CIDR) if one is given."""
    veth(router, port, peer, peer_if)
    enslave(router, port, bridge_name)
    if address:
        peer.run("ip", "addr", "add", address, "dev", peer_if)


def cleanup_stale() -> list[str]:
    """Delete namespaces made by processes that no longer exist."""
    removed = []
    marks = Path("/run/nixie-netns")
    if not marks.is_dir():
        return removed
    for mark in marks.iterdir():
        try:
            pid = int(mark.read_text().strip())
            os.kill(pid, 0)
            continue
        except FileNotFoundError:
            continue  # its owner cleaned up while we looked
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        if re.fullmatch(r"[A-Za-z0-9_.-]+", mark.name):
            ns = Netns.__new__(Netns)
            ns.name = mark.name
            ns.close()
            removed.append(mark.name)
    return removed


def wait_port(ns: Netns | None, host: str, port: int, timeout: float = 15) -> bool:
    """Wait until a TCP port accepts connections (inside `ns`)."""
    deadline = time.monotonic() + timeout
    probe = ("import socket,sys;s=socket.socket();s.settimeout(0.5);"
             f"sys.exit(s.connect_ex(({host!r},{port})))")
    while time.monotonic() < deadline:
        cmd = [sys.executable, "-c", probe]
        r = subprocess.run(ns.argv(*cmd) if ns else cmd, capture_output=True)
        if r.returncode == 0:
            return True
        time.sleep(0.1)
    return False


def stop_processes(procs: Iterable[subprocess.Popen], timeout: float = 5, group: bool = False
                   ) -> None:
    """Terminate each process still running; kill the ones that do not exit within `timeout`.

    `group`: signal each one's whole process group (it must lead a session of its own).
    """
    def signal_(p: subprocess.Popen, sig: int) -> None:
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)

    for p in procs:
        if p.poll() is None:
            signal_(p, signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                signal_(p, signal.SIGKILL)
                p.wait()


def serve_argv(config: str | Path, *extra: str) -> list[str]:
    """The command line of `nixie serve` from this checkout."""
    return [sys.executable, "-m", "appliance.cli.main", "serve", "--config", str(config), *extra]


def start_serve(ns: Netns | None, config: str | Path, log: str | Path, *extra: str,
                mode: str = "w", **kw) -> subprocess.Popen:
    """Start `nixie serve` in `ns` (None: on the host) in a session of its own, output to `log`."""
    kw.setdefault("cwd", ROOT)
    kw.setdefault("start_new_session", True)
    cmd = serve_argv(config, *extra)
    with open(log, mode) as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(ns.argv(*cmd) if ns else cmd, stdout=out,
                                stderr=subprocess.STDOUT, **kw)


@contextmanager
def serving(ns: Netns | None, config: str | Path, log: str | Path,
            ports: Iterable[tuple[str, int]] = (), *, args: Iterable[str] = (),
            timeout: float = 20, stop_timeout: float = 10, group: bool = False, mode: str = "w",
            **kw) -> Iterator[subprocess.Popen]:
    """`nixie serve` running in `ns` until the block ends, once each of `ports` accepts.

    A port that does not open fails with the serve log in the message; at the end
    serve is terminated (killed after `stop_timeout`; with `group`, its whole process
    group) whatever happened.
    """
    proc = start_serve(ns, config, log, *args, mode=mode, **kw)
    try:
        for host, port in ports:
            if not wait_port(ns, host, port, timeout=timeout):
                raise AssertionError(f"serve is not listening on {host}:{port}\n"
                                     + Path(log).read_text())
        yield proc
    finally:
        stop_processes([proc], timeout=stop_timeout, group=group)
