"""Helpers for tests that run the real `nix` (single-user, as root, offline)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.config.schema import example_config, load_config
from appliance.nix.buildworker import BuildWorker
from appliance.nix.command import (
    SINGLE_USER_OFFLINE as NIX_EXTRA,  # what LAB.md says nix-bin needs here
)
from appliance.state.db import Store
from lab.netns import Netns, bridge, serving
from tests.conftest import run_nixie


def lab_config(tmp_path: Path, **builder) -> tuple[Path, object]:
    """A config file for a router on 10.77.0.1/24 that builds with the real nix."""
    cfg = example_config(state_dir=str(tmp_path / "state"), interface="br-lan")
    cfg["dhcp"]["mode"] = "off"
    cfg["dns"]["enable"] = False
    cfg["nix"] = {"extra_config": NIX_EXTRA}
    cfg["builder"] = {"kind": "local", "flake_refresh_seconds": 0, "flake_policy": "manual",
                      **builder}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path, load_config(path)


@contextmanager
def serving_lab(tmp_path: Path) -> Iterator[tuple[Netns, object, Path, Callable]]:
    """A real `nixie serve` with `lab_config` in a namespace with the LAN bridge:
    yields (namespace, serve's process, config path, `nixie(*args, timeout=120)` running
    the CLI in the namespace)."""
    cfg_path, _cfg = lab_config(tmp_path)
    with Netns() as ns:
        bridge(ns, "br-lan", "10.77.0.1/24")
        with serving(ns, cfg_path, tmp_path / "serve.log", [("10.77.0.1", 8080)]) as proc:
            def nixie(*args: str, timeout: float = 120):
                return run_nixie(*args, config=cfg_path, ns=ns, timeout=timeout)

            yield ns, proc, cfg_path, nixie


def build_worker(cfg):
    """(store, BuildWorker) over `cfg`'s state, its log and GC-root directories made, for a
    test that runs builds in its own process (`build_one`)."""
    store = Store(cfg.db_path)
    worker = BuildWorker(cfg, store)
    worker.log_dir.mkdir(parents=True, exist_ok=True)
    worker.root_dir.mkdir(parents=True, exist_ok=True)
    return store, worker
