"""Helpers for tests that run the real `nix` (single-user, as root, offline)."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.config.schema import example_config, load_config
from appliance.nix.buildworker import BuildWorker
from appliance.nix.command import (
    SINGLE_USER_OFFLINE as NIX_EXTRA,  # what LAB.md says nix-bin needs here
)
from appliance.state.db import Store


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


def build_worker(cfg):
    """(store, BuildWorker) over `cfg`'s state, its log and GC-root directories made, for a
    test that runs builds in its own process (`build_one`)."""
    store = Store(cfg.db_path)
    worker = BuildWorker(cfg, store)
    worker.log_dir.mkdir(parents=True, exist_ok=True)
    worker.root_dir.mkdir(parents=True, exist_ok=True)
    return store, worker
