"""Evaluate the repository's pure Nix (no nixpkgs) with the real `nix-instantiate`.

`settings.nix` and the `hw/` profiles are functions of `lib`; the tests hand them
`tests/data/nix/stub-lib.nix` and read the result as JSON.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

STUB_LIB = ROOT / "tests" / "data" / "nix" / "stub-lib.nix"
SETTINGS_NIX = ROOT / "nixos-image" / "settings.nix"
NIX_CONFIG = ("experimental-features = nix-command flakes\nbuild-users-group =\n"
              "sandbox = false\nsubstituters =")


def nix_env() -> dict[str, str]:
    """The environment for Nix commands that use this machine's store (builds)."""
    return {**os.environ, "NIX_CONFIG": NIX_CONFIG}


@functools.cache
def _eval_state_dir() -> str:
    d = tempfile.mkdtemp(prefix="nixie-nix-eval-")
    atexit.register(shutil.rmtree, d, True)
    return d


def nix_eval_env() -> dict[str, str]:
    """For evaluation only: a private state directory, so no root is needed and nothing
    under /nix/var is touched (with --readonly-mode, nothing is added to the store)."""
    d = _eval_state_dir()
    return {**os.environ, "NIX_CONFIG": NIX_CONFIG, "NIX_STATE_DIR": f"{d}/state", "HOME": d,
            "XDG_CACHE_HOME": f"{d}/cache"}


@functools.cache
def nix_reason() -> str | None:
    if shutil.which("nix-instantiate") is None:
        return "nix-instantiate is not installed (package nix-bin)"
    r = subprocess.run(["nix-instantiate", "--readonly-mode", "--eval", "--expr", "1 + 1"],
                       capture_output=True, text=True, env=nix_eval_env(), timeout=60)
    if r.returncode != 0 or r.stdout.strip() != "2":
        return f"nix-instantiate cannot evaluate here: {r.stderr.strip()[:200]}"
    return None


def nix_str(path: Path) -> str:
    """A Nix path literal for an absolute path."""
    s = str(path)
    assert s.startswith("/") and " " not in s, s
    return s


def nix_eval(expr: str, timeout: float = 60) -> Any:
    """`nix-instantiate --eval --strict --json --expr EXPR`, parsed."""
    r = subprocess.run(["nix-instantiate", "--readonly-mode", "--eval", "--strict", "--json",
                        "--expr", expr],
                       capture_output=True, text=True, timeout=timeout, env=nix_eval_env(), cwd=ROOT)
    if r.returncode != 0:
        raise AssertionError(f"nix-instantiate failed:\n{r.stderr}\nexpression:\n{expr}")
    return json.loads(r.stdout)


def nix_parse(path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["nix-instantiate", "--readonly-mode", "--parse", str(path)],
                          capture_output=True, text=True, timeout=timeout, env=nix_eval_env(),
                          cwd=ROOT)


def nix_files() -> list[Path]:
    """Every .nix file of the repository (tracked or not), outside .venv/.git/build."""
    skip = {".venv", ".git", "build", "node_modules", ".lab"}
    out = []
    for p in sorted(ROOT.rglob("*.nix")):
        if not skip & set(p.relative_to(ROOT).parts):
            out.append(p)
    return out


def settings_expr(values_expr: str = "null") -> str:
    """An expression giving, for settings.nix evaluated with the stub lib:
    `keys` (dotted key, default, type description, description present) and
    `config` (toConfig applied to the defaults, overlaid with VALUES_EXPR, an
    attrset shaped like services.nixie.settings, or null)."""
    return f"""
let
  lib = import {nix_str(STUB_LIB)};
  s = import {nix_str(SETTINGS_NIX)} {{ inherit lib; }};
  describe = t: builtins.mapAttrs
    (k: v: if builtins.elem k [ "elem" "from" "to" ] then describe v else v)
    (builtins.removeAttrs t [ "check" ]);
  walk = prefix: tree: builtins.concatMap (name:
    let node = tree.${{name}}; key = prefix + name; in
    if s.isOption node then [ {{
      inherit key;
      default = node.default;
      type = describe node.type;
      described = builtins.isString (node.description or null) && node.description != "";
      defaultTypeChecks = node.type.check node.default;
    }} ] else walk (key + ".") node) (builtins.attrNames tree);
  defaultsOf = tree: builtins.mapAttrs (_: node: if s.isOption node then node.default else defaultsOf node) tree;
  # what the module system does with a module's definitions over the defaults
  overlay = base: top: builtins.mapAttrs
    (name: v: if builtins.isAttrs v && top ? ${{name}} then overlay v top.${{name}}
              else if top ? ${{name}} then top.${{name}} else v) base;
  values = {values_expr};
in {{
  keys = walk "" s.options;
  config = s.toConfig (if values == null then defaultsOf s.options else overlay (defaultsOf s.options) values);
}}
"""


def type_checks_expr(probes_file: Path) -> str:
    """For every option: the stub type's verdict on each probe value (a JSON list)."""
    return f"""
let
  lib = import {nix_str(STUB_LIB)};
  s = import {nix_str(SETTINGS_NIX)} {{ inherit lib; }};
  probes = builtins.fromJSON (builtins.readFile {nix_str(probes_file)});
  walk = prefix: tree: builtins.concatMap (name:
    let node = tree.${{name}}; key = prefix + name; in
    if s.isOption node then [ {{ inherit key; accepts = map node.type.check probes; }} ]
    else walk (key + ".") node) (builtins.attrNames tree);
in walk "" s.options
"""
