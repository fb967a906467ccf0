"""`nixie build HOST --wait` against a running `nixie serve`: the builder
service takes the queued build, runs the real nix, and the CLI sees the
generation; a broken flake fails with Nix's message and keeps it."""

from __future__ import annotations

import json
import signal
import uuid

from lab import flake as labflake
from tests.conftest import run_nixie
from tests.nixlab import lab_config, serving_lab


def test_build_wait_with_serve_running(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"serve-test {uuid.uuid4()}")
    with serving_lab(tmp_path) as (_ns, proc, _cfg_path, nixie):
        assert nixie("flake", "add", str(flake)).returncode == 0
        r = nixie("flake", "refresh", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)[0]["configurations"] == ["demo", "demo2"]
        assert nixie("host", "add", "demo", "--mac", "52:54:00:5e:00:01",
                     "--flake", str(flake)).returncode == 0

        r = nixie("build", "demo", "--wait", "--timeout", "120", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        b = json.loads(r.stdout)
        assert b["status"] == "succeeded" and b["toplevel"].endswith("-nixos-system-demo")
        host = json.loads(nixie("host", "show", "demo", "--json").stdout)
        assert host["current_generation"] == 1
        assert [g["toplevel"] for g in host["generations"]] == [b["toplevel"]]

        labflake.break_flake(flake)
        r = nixie("build", "demo", "--wait", "--timeout", "120", "--json")
        assert r.returncode == 1
        failed = json.loads(r.stdout)
        assert failed["status"] == "failed" and "error:" in failed["error"]
        host = json.loads(nixie("host", "show", "demo", "--json").stdout)
        assert host["current_generation"] == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_build_here_without_serve(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"here-test {uuid.uuid4()}")
    cfg_path, _cfg = lab_config(tmp_path)
    assert run_nixie("host", "add", "demo2", "--mac", "52:54:00:5e:00:02", "--flake", str(flake),
                     config=cfg_path).returncode == 0
    r = run_nixie("build", "demo2", "--here", "--json", config=cfg_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    b = json.loads(r.stdout)
    assert b["status"] == "succeeded" and b["toplevel"].endswith("-nixos-system-demo2")
    host = json.loads(run_nixie("host", "show", "demo2", "--json", config=cfg_path).stdout)
    assert host["current_generation"] == 1
