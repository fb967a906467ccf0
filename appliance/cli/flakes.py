"""`nixie flake`: the flake URLs hosts are built from, and their nixosConfigurations."""

from __future__ import annotations

import sys
from typing import Any

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import flakes
from appliance.nix.command import Nix
from appliance.nix.flake_eval import evaluate_now, refresh_flake


def _flake_human(r: dict[str, Any]) -> None:
    if r.get("last_error"):
        print(f"{r['url']}: evaluation failed:\n{r['last_error']}", file=sys.stderr)
    elif r.get("eval_state") != "idle":
        print(f"{r['url']}: {r['eval_state']} (nixie serve evaluates it)")
    else:
        print(f"{r['url']}: {' '.join(r['configurations']) or '(no nixosConfigurations)'}")


def _last_line(text: str | None) -> str:
    lines = (text or "").splitlines()
    return lines[-1] if lines else ""


def cmd_flake_add(ctx: Ctx) -> int:
    """Add and evaluate (here, or wait for serve's evaluator); --no-wait only queues."""
    f = flakes.add_flake(ctx.conn, ctx.args.url)
    if ctx.args.no_wait:
        emit(ctx.args, f, lambda: print(f"added flake {f['url']} (id {f['id']}); evaluating it"))
        return 0
    if not ctx.args.json:
        print(f"added flake {f['url']} (id {f['id']}); evaluating it...", flush=True)
    r = evaluate_now(ctx.conn, Nix.from_config(ctx.runtime_cfg), f["id"])
    emit(ctx.args, r, lambda: _flake_human(r))
    return 1 if r.get("last_error") else 0


def cmd_flake_list(ctx: Ctx) -> int:
    rows = flakes.list_flakes(ctx.conn)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("ID", "id"), ("URL", "url"),
        ("CONFIGURATIONS", lambda r: " ".join(r["configurations"])),
        ("REFRESHED", lambda r: timestamp(r["last_refresh"])),
        ("ERROR", lambda r: _last_line(r["last_error"]))]))
    return 0


def cmd_flake_refresh(ctx: Ctx) -> int:
    nix = Nix.from_config(ctx.runtime_cfg)
    targets = ([flakes.get_flake(ctx.conn, ctx.args.url)] if ctx.args.url
               else flakes.list_flakes(ctx.conn))
    results, failed = [], False
    for f in targets:
        r = refresh_flake(ctx.conn, nix, f["id"])
        results.append(r)
        failed = failed or bool(r.get("last_error"))

    def human():
        for r in results:
            _flake_human(r)

    emit(ctx.args, results, human)
    return 1 if failed else 0


def cmd_flake_remove(ctx: Ctx) -> int:
    flakes.remove_flake(ctx.conn, ctx.args.url)
    print(f"removed flake {ctx.args.url}")
    return 0


def register(sub: Subparsers) -> None:
    fl = group(sub, "flake", "flake URLs")
    s = leaf(fl, "add", cmd_flake_add, "add a flake URL and list its nixosConfigurations")
    s.add_argument("url")
    s.add_argument("--no-wait", action="store_true", help="only queue the evaluation")
    leaf(fl, "list", cmd_flake_list, "list flakes and their nixosConfigurations")
    leaf(fl, "refresh", cmd_flake_refresh, "evaluate flakes again").add_argument("url", nargs="?")
    leaf(fl, "remove", cmd_flake_remove, "remove a flake").add_argument("url")
