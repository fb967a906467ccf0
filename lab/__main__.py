"""`python -m lab up|down|status`: the appliance on an isolated LAN (what `make run` runs)."""

from __future__ import annotations

import argparse
import sys

from lab import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab",
                                description="the lab: a LAN in network namespaces with the appliance on it")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--name", default="nixie-lab")
    p.add_argument("--web-port", type=int, default=8080)
    p.add_argument("--no-vm", action="store_true", help="do not start the PXE-booting VMs")
    return run.main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
