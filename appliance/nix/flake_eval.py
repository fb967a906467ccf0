"""Evaluating flakes with the real `nix` CLI: their nixosConfigurations, the MACs
each declares (`config.nixie.netboot.macs`), and the queue of evaluations.

Adding a flake (UI, API, CLI) queues its evaluation (`flakes.eval_state`
'queued'); the build worker's evaluator thread, or the CLI itself, claims it
('evaluating') and records the listing or Nix's error ('idle'). A failed
evaluation keeps the last good listing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from appliance.config.macs import normalize_mac
from appliance.domain import flakes
from appliance.errors import InvalidInput
from appliance.nix import flake_access
from appliance.nix.command import Nix, NixFailed


def list_configurations(nix: Nix, url: str) -> tuple[list[str], str | None]:
    """The flake's nixosConfigurations names and its locked URL."""
    names = nix.eval_json(f"{url}#nixosConfigurations", apply="builtins.attrNames")
    try:
        locked = nix.flake_metadata(url).get("url")
    except NixFailed:
        locked = None
    return sorted(names), locked


# MACs a configuration declares for the router (the netboot-client module's
# option); configurations without it, or whose evaluation fails, declare none
MACS_APPLY = ("cs: builtins.mapAttrs (n: c: let m = builtins.tryEval "
              "(c.config.nixie.netboot.macs or []); in if m.success then m.value else []) cs")


def declared_macs(nix: Nix, url: str) -> dict[str, list[str]] | None:
    """{configuration: [mac, ...]} or None when the flake cannot say (kept as it was)."""
    try:
        raw = nix.eval_json(f"{url}#nixosConfigurations", apply=MACS_APPLY)
    except NixFailed:
        return None
    out: dict[str, list[str]] = {}
    for name, macs in (raw or {}).items():
        good = []
        for m in macs if isinstance(macs, list) else []:
            try:
                good.append(normalize_mac(m))
            except InvalidInput:  # a bad MAC in a flake is skipped, not fatal
                continue
        if good:
            out[name] = good
    return out


# each configuration's system: its derivation (what "changed" means: a new .drv is a new
# system to build) and its output path (the generation it becomes)
_TOPLEVEL = ("let t = c.config.system.build.toplevel; in builtins.seq t.drvPath "
             "{ drv = t.drvPath; out = t.outPath; }")
TOPLEVELS_APPLY = ("cs: builtins.mapAttrs (n: c: let r = builtins.tryEval (" + _TOPLEVEL + "); "
                   "in if r.success then r.value else null) cs")


def _good_toplevel(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("drv"), str) and v["drv"].endswith(".drv")
            and isinstance(v.get("out"), str))


def toplevels(nix: Nix, url: str, names: list[str]) -> dict[str, dict[str, str]]:
    """{configuration: {drv, out}} of the configurations that evaluate; all at once, or
    one by one when one of them fails in a way `tryEval` cannot catch."""
    try:
        raw = nix.eval_json(f"{url}#nixosConfigurations", apply=TOPLEVELS_APPLY) or {}
        return {n: v for n, v in raw.items() if _good_toplevel(v)}
    except NixFailed:
        pass
    out = {}
    for n in names:
        try:
            v = nix.eval_json(f"{url}#nixosConfigurations.\"{n}\"", apply="c: " + _TOPLEVEL)
        except NixFailed:
            continue
        if _good_toplevel(v):
            out[n] = v
    return out


def refresh_flake(conn: sqlite3.Connection, nix: Nix, flake_id: int,
                  state_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a flake again; on failure keep the last good listing and store Nix's error
    (cleared of the flake's secrets). With `state_dir`, the flake's credential is used; an
    on_change flake's systems (toplevel .drv and output) are evaluated too."""
    f = next(x for x in flakes.list_flakes(conn) if x["id"] == flake_id)
    fnix = flake_access.nix_for(nix, state_dir, f)
    try:
        names, locked = list_configurations(fnix, f["url"])
    except NixFailed as e:
        flakes.save_refresh(conn, flake_id, configurations=None, locked_url=None,
                            error=flake_access.redact(str(e), state_dir, f))
    else:
        ref = locked or f["url"]
        macs = declared_macs(fnix, ref)
        if macs is not None:
            conn.execute("UPDATE flakes SET macs = ? WHERE id = ?", (json.dumps(macs), flake_id))
        if f["build_policy"] == "on_change":
            flakes.save_toplevels(conn, flake_id, toplevels(fnix, ref, names))
        flakes.save_refresh(conn, flake_id, configurations=names, locked_url=locked, error=None)
    return flakes.get_flake(conn, f["url"])


def _evaluate_claimed(conn: sqlite3.Connection, nix: Nix, flake_id: int,
                      state_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a flake this caller claimed, and give the claim back."""
    try:
        return refresh_flake(conn, nix, flake_id, state_dir)
    finally:
        flakes.finish_evaluation(conn, flake_id)


def evaluate_next(conn: sqlite3.Connection, nix: Nix, state_dir: str | None = None
                  ) -> dict[str, Any] | None:
    """Claim the oldest queued flake and evaluate it; None when none is queued."""
    f = flakes.claim_evaluation(conn)
    return None if f is None else _evaluate_claimed(conn, nix, f["id"], state_dir)


def evaluate_now(conn: sqlite3.Connection, nix: Nix, flake_id: int, *, timeout: float = 1800,
                 state_dir: str | None = None) -> dict[str, Any]:
    """Evaluate this flake here (the CLI), or wait while `nixie serve` evaluates it."""
    deadline = time.monotonic() + timeout
    while flakes.claim_evaluation(conn, flake_id) is None:
        f = flakes.get_flake(conn, str(flake_id))
        if f["eval_state"] == "idle" or time.monotonic() > deadline:
            return f
        time.sleep(0.2)
    return _evaluate_claimed(conn, nix, flake_id, state_dir)


def check_revision(conn: sqlite3.Connection, nix: Nix, flake: dict[str, Any],
                   state_dir: str | None = None) -> bool:
    """The flake's locked revision now (`nix flake metadata`): queue an evaluation when it
    moved (True). A failed check is recorded as the time of the check only."""
    try:
        locked = flake_access.nix_for(nix, state_dir, flake).flake_metadata(flake["url"]).get("url")
    except NixFailed:
        locked = None
    return flakes.save_check(conn, flake["id"], locked)
