"""bench/stage1: what the netboot client's stage 1 pays to keep the initramfs store.

nixosModules.netboot-client copies the store the router put in the initramfs under
the tmpfs root before switch_root (a bind mount would not survive switch_root). This
measures that copy, with the module's own postMountCommands (as Nix evaluates them) run
by busybox sh (NixOS's scripted stage 1 tools), next to two references on the same
synthetic store in the same run: coreutils `cp -a` and a `tar | tar` pipe. Everything
runs in a private mount namespace on tmpfs file systems; nothing outside is touched.

    python -m bench.stage1.run [--mib 256] [--paths 1500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.nixeval import nix_eval, nix_reason, nix_str  # noqa: E402

SCENARIO = r"""
set -eu
work=$1; mib=$2; npaths=$3
mount -t tmpfs initramfs /nix
mkdir -p /nix/store
python3 - "$mib" "$npaths" <<'PY'
import os, sys
mib, n = int(sys.argv[1]), int(sys.argv[2])
per = mib * 1024 * 1024 // n
blob = os.urandom(per)
for i in range(n):
    d = f"/nix/store/{i:032d}-path-{i}"
    os.makedirs(d + "/lib")
    with open(d + "/lib/data", "wb") as f:
        f.write(blob[: per * 3 // 4])
    with open(d + "/small", "wb") as f:
        f.write(blob[: per // 4])
    os.symlink("lib/data", d + "/link")
PY
measure() {  # name, command...
    name=$1; shift
    mkdir -p "$work/root-$name"
    mount -t tmpfs root "$work/root-$name"
    sync
    t0=$(date +%s%N)
    "$@"
    t1=$(date +%s%N)
    echo "$name $(( (t1 - t0) / 1000000 ))"
    umount "$work/root-$name"
}
ours() { targetRoot=$work/root-ours busybox sh "$work/stage1.sh"; }
cp_ref() { mkdir -p "$work/root-cp/nix/store" && cp -a /nix/store/. "$work/root-cp/nix/store/"; }
tar_ref() { mkdir -p "$work/root-tar/nix" && (cd /nix && tar cf - store) | (cd "$work/root-tar/nix" && tar xf -); }
for round in 1 2 3; do  # interleaved, so a busy moment hits every method alike
    measure ours ours
    measure cp cp_ref
    measure tar tar_ref
done
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--paths", type=int, default=1500)
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("busybox"):
        print("bench/stage1: needs root, unshare and busybox; skipped")
        return 0
    if reason := nix_reason():
        print(f"bench/stage1: {reason}; skipped")
        return 0
    c = nix_eval(f"import {nix_str(ROOT / 'tests/data/nix/module-eval.nix')} "
                 f"{{ module = {nix_str(ROOT / 'nixos-image/netboot-client.nix')}; }}")["config"]
    with tempfile.TemporaryDirectory(prefix="nixie-bench-stage1-") as work:
        Path(work, "stage1.sh").write_text(c["boot"]["initrd"]["postMountCommands"])
        Path(work, "scenario.sh").write_text(SCENARIO)
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash",
                            f"{work}/scenario.sh", work, str(a.mib), str(a.paths)],
                           capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        return 1
    runs: dict[str, list[int]] = {}
    for line in r.stdout.split("\n"):
        if line:
            name, value = line.split()
            runs.setdefault(name, []).append(int(value))
    ms = {name: sorted(v)[len(v) // 2] for name, v in runs.items()}  # median of 3
    print(f"stage-1 store copy of {a.mib} MiB in {a.paths} store paths (tmpfs to tmpfs), "
          "median of 3 interleaved rounds:")
    for name, label in (("ours", "ours: netboot-client postMountCommands (busybox sh + cp -a)"),
                        ("cp", "reference: coreutils cp -a of the whole store"),
                        ("tar", "reference: tar | tar")):
        secs = ms[name] / 1000
        print(f"  {label:64s} {secs:6.2f} s  {a.mib / max(secs, 1e-3):7.0f} MiB/s")
    print(f"  ratio ours/cp: {ms['ours'] / max(ms['cp'], 1):.2f}  ours/tar: {ms['ours'] / max(ms['tar'], 1):.2f}"
          "  (time; lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
