"""`make bench`: run every benchmark under bench/<area>/run.py, one after another.

Each benchmark runs our server and a reference on the same load in the same
run and prints figures and ratios. `make bench ARGS=dhcp` runs one area.
bench/fuzz has no reference: it counts crashes and hangs over 10^6 generated inputs
per protocol and fails the run on any.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = set(sys.argv[1:]) or set(os.environ.get("BENCH", "").split()) - {""}
    areas = sorted(p.parent.name for p in HERE.glob("*/run.py"))
    if only:
        areas = [a for a in areas if a in only]
    if not areas:
        print("no benchmarks found")
        return 0
    failed = []
    for area in areas:
        print(f"=== bench/{area}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{area}.run"], cwd=HERE.parent)
        if rc:
            failed.append(area)
    if failed:
        print("benchmarks failed: " + " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
