"""The JSON the NixOS router module writes, for a hardware profile, runs `nixie serve`.

The config is made by Nix the way the module makes it (settings.nix's toConfig over the
option defaults, the qemu profile's port mapping, and the two values the module and its
deployment set: the iPXE directory and the state directory), then `nixie serve` starts
with it in a namespace whose LAN port has the profile's name, answers /healthz on the
default listener and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest

from lab.netns import Netns, bridge, serving
from tests.conftest import ROOT, run_nixie
from tests.https import GET_SNIPPET
from tests.nixeval import STUB_LIB, nix_eval, nix_reason, nix_str, settings_expr

pytestmark = pytest.mark.skipif(nix_reason() is not None, reason=str(nix_reason()))


def module_config(state_dir: str) -> dict:
    profile = (f"(import {nix_str(ROOT / 'hw/qemu.nix')} {{ lib = import {nix_str(STUB_LIB)}; "
               f"modulesPath = \"/stub\"; config = {{ }}; pkgs = {{ }}; }}).services.nixie.settings")
    values = (f"({profile}) // {{ state_dir = \"{state_dir}\"; "
              f"tftp = {{ ipxe_dir = \"/usr/lib/ipxe\"; }}; }}")
    return nix_eval(settings_expr(values))["config"]


def test_serve_runs_with_the_module_written_config(tmp_path):
    cfg = module_config(str(tmp_path / "state"))
    assert cfg["lan"]["interface"] == "eth1" and cfg["wan"]["interface"] == "eth0"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg, indent=2))
    check = run_nixie("config", "check", config=path)
    assert check.returncode == 0, check.stderr

    lan_ip = cfg["lan"]["address"].split("/")[0]
    with Netns() as ns:
        bridge(ns, cfg["lan"]["interface"], cfg["lan"]["address"])
        bridge(ns, cfg["wan"]["interface"])
        assert cfg["web"]["listen"] is None  # the default: the LAN address, port 8080
        port = 8080
        with serving(ns, path, tmp_path / "serve.log", [(lan_ip, port)], timeout=30) as proc:
            r = ns.run(sys.executable, "-c", GET_SNIPPET, f"https://{lan_ip}:{port}/healthz")
            status, _, body = r.stdout.partition("\n")
            assert status == "200"
            health = json.loads(body)
            assert health["ok"], health
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=15)
    out = (tmp_path / "serve.log").read_text()
    assert rc == 0, out
    assert "nixie serve stopped" in out
    assert (tmp_path / "state" / "nixie.db").exists()
