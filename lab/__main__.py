"""`python -m lab up|down|status`: the appliance on an isolated LAN (what `make run` runs)."""

from __future__ import annotations

import argparse
import sys

from lab import run


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lab",
                                description="the lab: a LAN in network namespaces with the appliance on it")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--name", default="nixie-lab")
    p.add_argument("--web-port", type=int, default=8080)
    p.add_argument("--no-vm", action="store_true", help="do not start the PXE-booting VMs")
    p.add_argument("--install", action="store_true",
                   help="give the VMs empty disks and install their systems to them")
    a = p.parse_args(argv)
    if a.install and a.no_vm:
        p.error("--install needs the VMs (drop --no-vm)")
    return a


def main(argv: list[str] | None = None) -> int:
    return run.main(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
