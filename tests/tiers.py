"""Which test tiers this machine can run, and why not when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache


@cache
def netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    name = f"nxprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    return None


@cache
def vm_reason() -> str | None:
    if r := netns_reason():
        return r
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed"
    for f in ("/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi",
              "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"):
        if not os.path.exists(f):
            return f"{f} is missing (packages ipxe, ovmf)"
    if not shutil.which("nix"):
        return "nix is not installed (package nix-bin)"
    return None


@cache
def browser_reason() -> str | None:
    if not os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium is not installed"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


TIERS = {
    "unit": lambda: None,
    "netns": netns_reason,
    "vm": vm_reason,
    "browser": browser_reason,
}
