"""Shared fixtures. Tests live in a folder per tier (unit/, netns/, vm/, browser/);
the folder sets the marker, and a tier this machine cannot run is skipped with
its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.config.schema import example_config
from tests.tiers import TIERS

ROOT = Path(__file__).resolve().parent.parent
NIXIE = [sys.executable, "-m", "appliance.cli.main"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        tier = parts[0] if parts[0] in TIERS else "unit"
        item.add_marker(getattr(pytest.mark, tier))
        reason = TIERS[tier]()
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"tier {tier}: {reason}"))


def pytest_sessionfinish(session, exitstatus):
    if TIERS["netns"]() is None:
        from lab.netns import cleanup_stale

        cleanup_stale()


def wait_for(pred: Callable[[], object], timeout: float = 15.0, every: float = 0.05) -> bool:
    """True as soon as `pred()` is; False if it still is not after `timeout` seconds
    (for `assert wait_for(...), what_went_wrong`)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return d


def write_config(path: Path, state_dir: Path | str) -> Path:
    """A minimal valid config on loopback (DHCP and DNS off) over `state_dir`, written
    to `path`; returns `path`."""
    cfg = example_config(state_dir=str(state_dir), interface="lo", address="127.0.0.1/8")
    cfg["dhcp"]["mode"] = "off"
    cfg["dhcp"]["range"] = ["127.0.0.100", "127.0.0.199"]
    cfg["dns"]["enable"] = False
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture
def config_file(tmp_path, state_dir):
    """A minimal valid config on loopback with free-ish ports; returns its path."""
    return write_config(tmp_path / "config.json", state_dir)


def run_nixie(*args: str, config: Path | None = None, input: str | None = None,
              ns=None, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [*NIXIE, *args]
    if config is not None:
        cmd += ["--config", str(config)]
    if ns is not None:
        cmd = ns.argv(*cmd)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout,
                          cwd=ROOT, env=env)


@pytest.fixture
def nixie():
    return run_nixie
