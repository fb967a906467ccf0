"""The netboot-client module's boot commands, run for real on a real Nix closure.

The commands are taken from the module as Nix evaluates it (tests/data/nix/module-eval.nix),
then run in a private mount namespace where tmpfs file systems stand in for the
initramfs's /nix, the tmpfs root and the booted system's /etc and /run:

1. a closure is built with the real nix (busybox as the builder, no nixpkgs) and its
   registration dumped with `nix-store --dump-db` (what the router ships at
   /nix/.nixie/registration, or nix-netboot-serve's /nix/.nix-netboot-serve-db/registration);
2. stage 1: the closure and the registration sit in the "initramfs" /nix, the
   postMountCommands (busybox sh, like NixOS's extraUtils) or the systemd-stage-1 unit's
   script (bash) copy them under the new root;
3. "switch_root": the new root's /nix is mounted over /nix, and the postBootCommands
   load the registration with the real nix-store: every path of the closure is valid,
   with its references, and the system profile points at it.

Nothing outside the mount namespace is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.nixeval import nix_env, nix_eval, nix_reason, nix_str

pytestmark = pytest.mark.skipif(nix_reason() is not None or shutil.which("unshare") is None
                                or shutil.which("busybox") is None,
                                reason="needs nix, unshare and busybox")

EVAL = ROOT / "tests/data/nix/module-eval.nix"


def boot_commands(systemd_stage1: bool) -> dict:
    extra = ('{ nix.package = { outPath = "/usr"; out = { outPath = "/usr"; }; }; '
             f'boot.initrd.systemd.enable = {"true" if systemd_stage1 else "false"}; }}')
    c = nix_eval(f"import {nix_str(EVAL)} {{ module = {nix_str(ROOT / 'nixos-image/netboot-client.nix')}; "
                 f"extra = {extra}; }}")["config"]
    stage1 = (c["boot"]["initrd"]["systemd"]["services"]["nixie-keep-store"]["script"]
              if systemd_stage1 else c["boot"]["initrd"]["postMountCommands"])
    return {"stage1": stage1, "stage2": c["boot"]["postBootCommands"]}


@pytest.fixture(scope="module")
def closure(tmp_path_factory):
    """A real two-path closure (plus the busybox builder) in this machine's store."""
    d = tmp_path_factory.mktemp("closure")
    (d / "bb" / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", d / "bb" / "bin" / "busybox")
    (d / "default.nix").write_text(f"""
let
  bb = builtins.path {{ path = {nix_str(d / 'bb')}; name = "busybox"; }};
  build = name: script: derivation {{
    inherit name; system = builtins.currentSystem;
    builder = "${{bb}}/bin/busybox"; args = [ "sh" "-c" script ];
  }};
  dep = build "nixie-stage1-dep" "echo dependency > $out";
in build "nixie-stage1-system" "mkdir -p $out/bin && echo ${{dep}} > $out/dep && ln -s ${{dep}} $out/bin/dep"
""")
    r = subprocess.run(["nix-build", "--no-out-link", str(d / "default.nix")], capture_output=True,
                       text=True, env=nix_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    top = r.stdout.strip().splitlines()[-1]
    paths = subprocess.run(["nix-store", "-qR", top], capture_output=True, text=True, check=True,
                           env=nix_env()).stdout.split()
    reg = subprocess.run(["nix-store", "--dump-db", *paths], capture_output=True, check=True,
                         env=nix_env()).stdout
    refs = subprocess.run(["nix-store", "-q", "--references", top], capture_output=True, text=True,
                          check=True, env=nix_env()).stdout.split()
    return {"top": top, "paths": sorted(paths), "registration": reg, "refs": sorted(refs)}


SCENARIO = r"""
set -eu
work=$1; shell=$2; root=$3; registration=$4
# the host's /nix disappears behind a tmpfs: this is the initramfs's /nix
mount -t tmpfs initramfs /nix
mkdir -p /nix/store "$(dirname "$registration")"
cp -a "$work"/store/. /nix/store/
cp "$work/registration" "$registration"
# the tmpfs root stage 1 mounted
mkdir -p "$root"
mount -t tmpfs root "$root"
targetRoot=$root "$shell" "$work/stage1.sh"
# what the new root holds, as stage 2 will see it
(cd "$root" && find nix -maxdepth 3 | sort) > "$work/newroot.txt"
stat -c '%a %g' "$root/nix/store" > "$work/storemode.txt"
# switch_root: the new root's /nix replaces the initramfs's; /etc and /run are the new system's
mount --bind "$root/nix" /nix
mount -t tmpfs etc /etc
echo 'root:x:0:0::/root:/bin/sh' > /etc/passwd
echo 'root:x:0:' > /etc/group
mount -t tmpfs run /run
ln -s "$(cat "$work/top")" /run/current-system
bash "$work/stage2.sh"
for p in $(cat "$work/paths"); do nix-store --check-validity "$p" && echo "valid $p"; done > "$work/valid.txt"
nix-store -q --references "$(cat "$work/top")" | sort > "$work/refs.txt"
readlink -f /nix/var/nix/profiles/system > "$work/profile.txt"
test -e /etc/NIXOS && echo yes > "$work/nixos.txt"
"""


@pytest.mark.parametrize("systemd_stage1, registration", [
    (False, "/nix/.nixie/registration"),
    (True, "/nix/.nixie/registration"),
    (False, "/nix/.nix-netboot-serve-db/registration"),
], ids=["scripted-stage1", "systemd-stage1", "netboot-serve-layout"])
def test_stage1_keeps_the_store_and_stage2_registers_it(closure, systemd_stage1, registration,
                                                        tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    cmds = boot_commands(systemd_stage1)
    work = tmp_path / "work"
    (work / "store").mkdir(parents=True)
    for p in closure["paths"]:
        subprocess.run(["cp", "-a", p, str(work / "store")], check=True)
    (work / "registration").write_bytes(closure["registration"])
    (work / "top").write_text(closure["top"])
    (work / "paths").write_text("\n".join(closure["paths"]))
    root = work / "newroot"
    # the systemd unit's script names /sysroot; here the new root is a directory of the test
    (work / "stage1.sh").write_text(cmds["stage1"].replace("/sysroot", str(root)))
    (work / "stage2.sh").write_text(cmds["stage2"])
    (work / "scenario.sh").write_text(SCENARIO)
    # scripted stage 1 runs under busybox sh (as NixOS's extraUtils); the unit's script under bash
    shell = "bash" if systemd_stage1 else f"{shutil.which('busybox')} sh"
    wrapper = work / "shell.sh"
    wrapper.write_text(f"#!/bin/sh\nexec {shell} \"$@\"\n")
    wrapper.chmod(0o755)
    env = {**nix_env(), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    r = subprocess.run(["unshare", "--mount", "--propagation", "private",
                        "bash", str(work / "scenario.sh"), str(work), str(wrapper), str(root),
                        registration],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    listing = (work / "newroot.txt").read_text().split()
    for p in closure["paths"]:
        assert p.lstrip("/") in listing, listing
    assert registration.lstrip("/") in listing
    assert (work / "storemode.txt").read_text().split() == ["1775", "30"]
    valid = (work / "valid.txt").read_text().split("\n")
    assert sorted(line.removeprefix("valid ") for line in valid if line) == closure["paths"]
    assert (work / "refs.txt").read_text().split() == closure["refs"]
    assert (work / "profile.txt").read_text().strip() == closure["top"]
    assert (work / "nixos.txt").read_text().strip() == "yes"
    # the host's own /nix is untouched
    assert Path(closure["top"]).exists() and not (work / "newroot" / "nix").exists()
