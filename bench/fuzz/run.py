"""Fuzz bench: at least 10^6 generated inputs per protocol the router parses from the LAN,
in-process, through the pure codec and the engine or handler its server loop calls.

Protocols: dhcp, tftp, dns, http (HTTP boot paths, query strings, Range headers)
and agent (the agent API's JSON body). Inputs are mutations of real packets
(tests/data/dhcp captures, well-formed requests) and random bytes, from plain
`random` seeded by the printed seed (see bench/fuzz/harness.py and targets.py).
Prints per protocol: inputs, parsed ok, rejected (dropped and counted), crashes,
hangs (> 1 s of CPU, or blocked > 10 s) and inputs/s per core. Exits 1 on any
crash or hang, the inputs saved under bench/fuzz/crashers/ (gitignored).

Run: python -m bench.fuzz.run [--inputs 1000000] [--seed N] [--jobs 2] [dhcp tftp ...]
     python -m bench.fuzz.run --replay bench/fuzz/crashers/agent-....bin
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .harness import Tally, close_targets, replay, run_fuzz
from .targets import PROTOCOLS

HERE = Path(__file__).resolve().parent
CRASHERS = HERE / "crashers"


def table(totals: dict[str, Tally]) -> str:
    head = (f"{'protocol':<9}{'inputs':>10}{'parsed ok':>11}{'rejected':>10}{'crashes':>9}"
            f"{'hangs':>7}{'inputs/s/core':>15}")
    rows = [head]
    for t in totals.values():
        rows.append(f"{t.protocol:<9}{t.inputs:>10}{t.parsed:>11}{t.rejected:>10}{t.crashes:>9}"
                    f"{t.hangs:>7}{t.rate:>15.0f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz.run", description=__doc__.split("\n")[0])
    ap.add_argument("protocols", nargs="*", choices=[*PROTOCOLS, []], metavar="PROTOCOL",
                    help=f"some of: {' '.join(PROTOCOLS)} (default: all)")
    ap.add_argument("--inputs", type=int, default=1_000_000, help="per protocol")
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh one, printed")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--replay", type=Path, help="run one saved crasher file and show the outcome")
    args = ap.parse_args(argv)

    if args.replay:
        protocol = args.replay.name.split("-", 1)[0]
        with tempfile.TemporaryDirectory(prefix="nixie-fuzz-") as workdir:
            try:
                ok = replay(protocol, args.replay.read_bytes(), workdir)
            except Exception:  # noqa: BLE001 - show what the crasher does
                traceback.print_exc()
                return 1
            finally:
                close_targets()
        print(f"{args.replay.name}: {'accepted' if ok else 'rejected'}, no crash")
        return 0

    protocols = args.protocols or list(PROTOCOLS)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    print(f"fuzz: seed {seed}, {args.inputs} inputs per protocol ({' '.join(protocols)}), "
          f"{args.jobs} processes", flush=True)
    started = time.monotonic()
    last = [started]

    def progress(done: int, total: int, _r: Tally) -> None:
        if time.monotonic() - last[0] > 30 or done == total:
            last[0] = time.monotonic()
            print(f"  {done}/{total} chunks, {time.monotonic() - started:.0f} s", flush=True)

    totals = run_fuzz(protocols, args.inputs, seed, args.jobs, CRASHERS, progress=progress)
    print(table(totals))
    print(f"total: {sum(t.inputs for t in totals.values())} inputs in "
          f"{time.monotonic() - started:.0f} s on {args.jobs} processes")
    bad = [t for t in totals.values() if t.crashes or t.hangs]
    for t in bad:
        for sig, n in t.signatures.most_common():
            print(f"{t.protocol}: {n} x {sig}")
    if bad:
        saved = [s for t in bad for s in t.saved]
        print(f"{len(saved)} crashing inputs saved under {CRASHERS} "
              f"(replay: python -m bench.fuzz.run --replay FILE)")
        return 1
    print("0 crashes, 0 hangs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
