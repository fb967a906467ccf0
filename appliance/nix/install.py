"""Install to disk: the exact commands the router runs, or the installer runs.

Two ways, both built here as argument lists so they can be tested exactly:

* push (`nixie host install NAME --push`, `POST /api/v1/hosts/NAME/install`, the
  host page's button): the router runs nixos-anywhere against the host's running
  netbooted NixOS system over SSH, handing it the closure the router already built
  (`--store-paths <disko script> <toplevel>`; the disko script is the toplevel's
  `nixie-disko`, which `nixosModules.netboot-client` links there), so the target
  formats its disks with disko and receives the system from us. It runs only the
  phases `disko,install,reboot`: no kexec into another image, so the host key seen is
  the one pinned from the agent's first report (`appliance/domain/hostkeys.py`), and
  ssh checks it (`StrictHostKeyChecking=yes` against a known_hosts file holding only
  that key), never `StrictHostKeyChecking=no`;
* pull: the installer (nixos-image/installer module) pulls the toplevel and
  the disko script from the router's binary cache and runs them itself.

nixos-anywhere, disko and nixos-install exist only on NixOS: the tests compare these
command lines whole with golden files (a boundary test), and run the SSH part of the
push (the same `-o` options, the pinned key) with the real ssh against a real sshd.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shlex
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.domain import events, generations, hostkeys, hosts
from appliance.errors import Conflict, InvalidInput

log = logging.getLogger("nixie.install")


@dataclass(frozen=True)
class InstallPlan:
    host: str
    target_ip: str
    flake: str
    attr: str
    toplevel: str | None = None  # a closure the router built already
    disko_script: str | None = None  # `config.system.build.diskoScript` store path
    ssh_key: str | None = None
    ssh_user: str = "root"
    cache_url: str | None = None  # the router's binary cache, for the pull way
    cache_public_key: str | None = None
    known_hosts: str | None = None  # a file holding only the host's pinned key


def ssh_options(known_hosts: str) -> list[str]:
    """The `-o` options every SSH connection to a host gets: its pinned key only."""
    return ["StrictHostKeyChecking=yes", f"UserKnownHostsFile={known_hosts}",
            "GlobalKnownHostsFile=/dev/null", "BatchMode=yes"]


def nixos_anywhere_command(plan: InstallPlan, *, exe: str = "nixos-anywhere") -> list[str]:
    """The push way. With a prebuilt closure and disko script, nixos-anywhere
    copies them instead of building; otherwise it builds `flake#attr`."""
    if not plan.known_hosts:
        raise ValueError("the push install needs the host's pinned key (known_hosts)")
    cmd = [exe]
    if plan.toplevel and plan.disko_script:
        cmd += ["--store-paths", plan.disko_script, plan.toplevel]
    else:
        name = plan.attr.removeprefix("nixosConfigurations.")
        cmd += ["--flake", f"{plan.flake}#{name}"]
    # the target already runs NixOS with the pinned key: no kexec into another image
    cmd += ["--phases", "disko,install,reboot"]
    if plan.ssh_key:
        cmd += ["-i", plan.ssh_key]
    for opt in ssh_options(plan.known_hosts):
        cmd += ["--ssh-option", opt]
    cmd += ["--target-host", f"{plan.ssh_user}@{plan.target_ip}"]
    return cmd


def pull_install_commands(plan: InstallPlan) -> list[list[str]]:
    """The pull way, as the installer runs it: fetch from the router's cache,
    partition with the system's disko script, install, report."""
    if not (plan.toplevel and plan.disko_script and plan.cache_url):
        raise ValueError("the pull way needs a built toplevel, a disko script and the cache URL")
    opts = ["--option", "substituters", plan.cache_url]
    if plan.cache_public_key:
        opts += ["--option", "trusted-public-keys", plan.cache_public_key]
    return [
        ["nix-store", "--realise", plan.disko_script, plan.toplevel, *opts],
        [plan.disko_script],
        ["nixos-install", "--no-root-passwd", "--no-channel-copy", "--system", plan.toplevel, *opts],
    ]


def run_push_install(plan: InstallPlan, *, timeout: float = 3600) -> subprocess.CompletedProcess:
    exe = shutil.which("nixos-anywhere")
    if exe is None:
        raise FileNotFoundError("nixos-anywhere is not installed (it exists on NixOS)")
    cmd = nixos_anywhere_command(plan, exe=exe)
    log.info("running nixos-anywhere", extra={"host": plan.host, "cmd": shlex.join(cmd)})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ssh_dir(state_dir: str | os.PathLike) -> Path:
    """`state_dir/ssh`: the push install's identity, known_hosts and per-host locks."""
    return Path(state_dir) / "ssh"


def ssh_key_file(state_dir: str | os.PathLike) -> Path:
    """The router's SSH identity for push installs (`state_dir/ssh/id_ed25519`); without
    it nixos-anywhere uses ssh's defaults (the agent, ~/.ssh)."""
    return ssh_dir(state_dir) / "id_ed25519"


def disko_of(toplevel: str) -> str | None:
    """The system's disko script: `<toplevel>/nixie-disko` (netboot-client links it)."""
    link = Path(toplevel) / "nixie-disko"
    return os.path.realpath(link) if link.exists() else None


def push_plan(conn: sqlite3.Connection, state_dir: str | os.PathLike, name: str,
              known_hosts: str) -> tuple[InstallPlan, str]:
    """(the plan, the known_hosts text) for pushing host `name`'s current generation.
    InvalidInput/Conflict with the reason when the host cannot be pushed to."""
    h = hosts.get_host(conn, name)
    key = hostkeys.pinned(conn, h["id"])
    if not key:
        raise Conflict(f"host {name} has no pinned SSH host key: boot it (netboot or install "
                       "mode) so its agent reports one, then push")
    if not h["ip"]:
        raise Conflict(f"host {name} has no known address: boot it first")
    gens = generations.list_generations(conn, name)
    current = next((g for g in gens if g["current"]), gens[0] if gens else None)
    if current is None:
        raise Conflict(f"host {name} has no built generation: build it first")
    toplevel = current["toplevel"]
    ident = ssh_key_file(state_dir)
    plan = InstallPlan(host=name, target_ip=h["ip"], flake=h["flake"],
                       attr=h["attr"] or f"nixosConfigurations.{name}", toplevel=toplevel,
                       disko_script=disko_of(toplevel),
                       ssh_key=str(ident) if ident.exists() else None, known_hosts=known_hosts)
    return plan, hostkeys.known_hosts_line(h["ip"], key)


def push_command(conn: sqlite3.Connection, state_dir: str | os.PathLike, name: str
                 ) -> tuple[list[str], str]:
    """What `push_install` would run (argv, known_hosts text), for `--dry-run` and the API."""
    plan, text = push_plan(conn, state_dir, name, str(ssh_dir(state_dir) / "known_hosts"))
    return nixos_anywhere_command(plan), text


def _need_nixos_anywhere() -> None:
    if shutil.which("nixos-anywhere") is None:
        raise InvalidInput("nixos-anywhere is not installed here (the router's NixOS image "
                           "has it)", field="push")


def _claim(state_dir: str | os.PathLike, name: str) -> int:
    """The host's push lock (`state_dir/ssh/push-<host>.lock`, flock): one push per host
    at a time, across processes (the CLI, the web workers). Conflict while one runs."""
    d = ssh_dir(state_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(d / f"push-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict(f"a push install of {name} is already running") from None
    return fd


def push_install(conn: sqlite3.Connection, state_dir: str | os.PathLike, name: str, *,
                 timeout: float = 3600, claimed: int | None = None) -> int:
    """Push host `name`'s current generation to its disk with nixos-anywhere, trusting only
    its pinned host key. Events: install.push (started), install.pushed or
    install.push_failed (with the tail of the output), the outcome recorded once the
    host's push lock is released (a push started on seeing it is not refused). Returns
    nixos-anywhere's status. `claimed`: the lock's fd the caller took (`_claim`); it is
    released here."""
    fd = claimed
    try:
        if fd is None:
            _need_nixos_anywhere()
            fd = _claim(state_dir, name)
        code, outcome = _push(conn, state_dir, name, timeout)
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
    outcome()
    return code


def _push(conn: sqlite3.Connection, state_dir: str | os.PathLike, name: str,
          timeout: float) -> tuple[int, Callable[[], object]]:
    """(nixos-anywhere's status, what records its outcome event)."""
    with tempfile.TemporaryDirectory(dir=ssh_dir(state_dir)) as tmp:
        known = Path(tmp) / "known_hosts"
        plan, text = push_plan(conn, state_dir, name, str(known))
        known.write_text(text)
        h = hosts.get_host(conn, name)
        events.record(conn, "install.push", f"pushing {plan.toplevel} to {plan.target_ip} "
                      "with nixos-anywhere", host_id=h["id"], ip=plan.target_ip)
        try:
            r = run_push_install(plan, timeout=timeout)
            code, out = r.returncode, (r.stdout + r.stderr)[-2000:]
        except (OSError, subprocess.TimeoutExpired) as e:
            code, out = 1, str(e)
    if code == 0:
        return code, functools.partial(
            events.record, conn, "install.pushed", f"nixos-anywhere installed {plan.toplevel}",
            host_id=h["id"], ip=plan.target_ip)
    return code, functools.partial(
        events.record, conn, "install.push_failed", f"nixos-anywhere exited {code}: {out}",
        level="error", host_id=h["id"], ip=plan.target_ip)


def start_push_install(connect, state_dir: str | os.PathLike, name: str) -> list[str]:
    """`push_install` in a thread of its own (the web UI and API answer at once); the
    host's events tell how it went. Checks first, so a host that cannot be pushed to is
    an error now. One push per host at a time, across the web workers' processes: the
    thread holds `state_dir/ssh/push-<host>.lock` (flock) while it runs, and a second
    start is a Conflict. `connect()` gives the thread its own DB connection."""
    argv, _ = push_command(connect(), state_dir, name)
    _need_nixos_anywhere()
    fd = _claim(state_dir, name)

    def run() -> None:
        try:
            thread_conn = connect()
        except BaseException:
            os.close(fd)
            raise
        push_install(thread_conn, state_dir, name, claimed=fd)  # it releases the lock

    threading.Thread(target=run, name=f"push-install-{name}", daemon=True).start()
    return argv
