"""`make test`: run every tier this machine supports; print why any tier is skipped."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.tiers import TIERS


def main() -> int:
    runnable, skipped = [], []
    for tier, check in TIERS.items():
        reason = check()
        (skipped if reason else runnable).append((tier, reason))
    for tier, _ in runnable:
        print(f"tier {tier}: runs")
    for tier, reason in skipped:
        print(f"tier {tier}: SKIPPED: {reason}")
    sys.stdout.flush()
    marker = " or ".join(t for t, _ in runnable)
    os.makedirs("test-artifacts", exist_ok=True)
    args = [sys.executable, "-m", "pytest", "-m", marker, *sys.argv[1:]]
    return subprocess.call(args)


if __name__ == "__main__":
    sys.exit(main())
