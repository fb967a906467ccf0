"""`nixie build HOST --wait` talks back while a real `nixie serve` builds with the real
nix: status, progress and the builder's own log lines reach stdout while the build runs
(read from the pipe line by line, each with the time it arrived and whether the CLI
was still running), and `nixie build cancel` stops a running build: the waiting CLI
exits 1 with `cancelled`, and no generation comes of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from lab import flake as labflake
from tests.conftest import NIXIE, ROOT
from tests.nixlab import serving_lab

SLOW_STEPS = 6


def slow_flake(dest: Path) -> Path:
    """The lab flake whose toplevel's builder prints a line a second for SLOW_STEPS s."""
    flake = labflake.materialise(dest, release=f"stream-test {uuid.uuid4()}")
    lab = flake / "lab.nix"
    head = 'toplevel = run "nixos-system-${hostName}" \'\'\n        mkdir -p "$out"'
    text = lab.read_text()
    assert head in text, "the lab flake's toplevel changed shape"
    lab.write_text(text.replace(head, head.replace(
        'mkdir -p "$out"', f'for i in $(seq {SLOW_STEPS}); do echo "slow step $i"; sleep 1; done'
                           '\n        mkdir -p "$out"'), 1))
    labflake.commit(flake, "slow toplevel")
    return flake


def read_lines(proc: subprocess.Popen) -> list[tuple[float, bool, str]]:
    """Every stdout line of `proc` as (when it arrived, whether proc was still running, line)."""
    out = []
    for line in proc.stdout:
        out.append((time.monotonic(), proc.poll() is None, line.rstrip("\n")))
    return out


def test_build_wait_streams_and_cancel_stops(tmp_path):
    flake = slow_flake(tmp_path / "flake")
    with serving_lab(tmp_path) as (ns, serve, cfg_path, nixie):
        assert nixie("host", "add", "demo", "--mac", "52:54:00:5e:00:01",
                     "--flake", str(flake)).returncode == 0
        cmd = ns.argv(*NIXIE, "build", "demo", "--wait", "--timeout", "200",
                      "--config", str(cfg_path))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            lines = read_lines(proc)
            rc = proc.wait(timeout=200)
        finally:
            proc.kill()
        texts = [t for _, _, t in lines]
        print("\n".join(f"{when:.2f} {'running' if alive else 'exited'} {t}"
                        for when, alive, t in lines))
        assert rc == 0, proc.stderr.read()
        assert texts[-1].startswith("build 1 of demo: succeeded -> /nix/store/")
        steps = [i for i, t in enumerate(texts) if "slow step" in t]
        assert [texts[i].split("slow step ")[1] for i in steps] == \
            [str(n) for n in range(1, SLOW_STEPS + 1)]
        first, end = lines[steps[0]], lines[-1]
        # the builder's first line was on stdout while the CLI still waited, and the
        # end came later: it streamed, it did not print everything at the end
        assert first[1] and first[0] < end[0]
        assert any("build 1 of demo: running" in t for t in texts[:steps[0]])
        assert any(t.startswith("[") and "progress:" in t for t in texts)
        assert texts.index(next(t for t in texts if "running" in t)) < steps[0]

        # a second build (a new release), cancelled while its builder runs
        labflake.set_release(flake, f"second {uuid.uuid4()}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            seen = []
            for line in proc.stdout:
                seen.append(line.rstrip("\n"))
                if "slow step 2" in line:
                    r = nixie("build", "cancel", "2", "--json")
                    assert r.returncode == 0, r.stderr
                    assert json.loads(r.stdout)["status"] == "cancelled"
                    break
            rest = proc.stdout.read()
            rc = proc.wait(timeout=30)
        finally:
            proc.kill()
        assert rc == 1
        assert "build 2 of demo: cancelled" in rest, rest
        assert "slow step 6" not in rest  # its nix was stopped, not waited for
        host = json.loads(nixie("host", "show", "demo", "--json").stdout)
        assert host["current_generation"] == 1 and len(host["generations"]) == 1
        b = json.loads(nixie("build", "show", "2", "--json").stdout)
        assert b["status"] == "cancelled" and b["toplevel"] is None
        # its builder was stopped: the log stops growing short of the last step
        log = nixie("build", "log", "2").stdout
        time.sleep(2.5)
        assert nixie("build", "log", "2").stdout == log and "slow step 6" not in log

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=10) == 0
