"""Install to disk: the exact commands the router runs, or the installer runs.

Two ways, both built here as argument lists so they can be tested exactly:

* push: the router runs nixos-anywhere against the booted installer over SSH,
  handing it the closure the router already built (`--store-paths`), so the
  target formats its disks with disko and receives the system from us;
* pull: the installer (nixos-image/installer module) pulls the toplevel and
  the disko script from the router's binary cache and runs them itself.

nixos-anywhere, disko and nixos-install exist only on NixOS. The tests run
these command lines against recording executables on PATH.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from dataclasses import dataclass

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


def nixos_anywhere_command(plan: InstallPlan, *, exe: str = "nixos-anywhere") -> list[str]:
    """The push way. With a prebuilt closure and disko script, nixos-anywhere
    copies them instead of building; otherwise it builds `flake#attr`."""
    cmd = [exe]
    if plan.toplevel and plan.disko_script:
        cmd += ["--store-paths", plan.disko_script, plan.toplevel]
    else:
        name = plan.attr.removeprefix("nixosConfigurations.")
        cmd += ["--flake", f"{plan.flake}#{name}"]
    if plan.ssh_key:
        cmd += ["-i", plan.ssh_key]
    cmd += ["--ssh-option", "StrictHostKeyChecking=no",
            "--ssh-option", "UserKnownHostsFile=/dev/null"]
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
