"""`nixie flake`: the flake URLs hosts are built from, and their nixosConfigurations."""

from __future__ import annotations

import sys
from typing import Any

from appliance.cli.context import Ctx
from appliance.cli.output import done, emit, print_table, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import flakes
from appliance.errors import InvalidInput
from appliance.nix import flake_access
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
    f = flakes.add_flake(ctx.conn, ctx.args.url,
                         ctx.args.policy or ctx.runtime_cfg.builder.flake_policy)
    if ctx.args.no_wait:
        emit(ctx.args, f, lambda: print(f"added flake {f['url']} (id {f['id']}); evaluating it"))
        return 0
    if not ctx.args.json:
        print(f"added flake {f['url']} (id {f['id']}); evaluating it...", flush=True)
    r = evaluate_now(ctx.conn, Nix.from_config(ctx.runtime_cfg), f["id"],
                     state_dir=str(ctx.runtime_cfg.state_dir))
    emit(ctx.args, r, lambda: _flake_human(r))
    return 1 if r.get("last_error") else 0


def cmd_flake_list(ctx: Ctx) -> int:
    rows = flakes.list_flakes(ctx.conn)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("ID", "id"), ("URL", "url"), ("POLICY", "build_policy"),
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
        r = refresh_flake(ctx.conn, nix, f["id"], str(ctx.runtime_cfg.state_dir))
        results.append(r)
        failed = failed or bool(r.get("last_error"))

    def human():
        for r in results:
            _flake_human(r)

    emit(ctx.args, results, human)
    return 1 if failed else 0


def cmd_flake_remove(ctx: Ctx) -> int:
    f = flakes.get_flake(ctx.conn, ctx.args.url)
    flakes.remove_flake(ctx.conn, ctx.args.url)
    flake_access.remove_files(ctx.runtime_cfg.state_dir, f["id"])
    done(ctx.args, f"removed flake {ctx.args.url}", url=ctx.args.url)
    return 0


def cmd_flake_set(ctx: Ctx) -> int:
    f = flakes.set_policy(ctx.conn, ctx.args.url, ctx.args.policy)
    emit(ctx.args, f, lambda: print(f"flake {f['url']}: build policy {f['build_policy']}"))
    return 0


def _read_secret(path: str) -> str:
    """A secret from a file or stdin (-), never from the command line (ps shows that)."""
    try:
        return sys.stdin.read() if path == "-" else open(path).read()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None


def cmd_flake_credential(ctx: Ctx) -> int:
    a = ctx.args
    f = flakes.get_flake(ctx.conn, a.url)
    if a.clear:
        kind, secret = "none", None
    elif a.token_file:
        kind, secret = "token", _read_secret(a.token_file)
    elif a.ssh_key:
        kind, secret = "ssh_key", _read_secret(a.ssh_key)
    else:
        raise InvalidInput("give --token-file FILE, --ssh-key FILE or --clear")
    flake_access.store_credential(ctx.runtime_cfg.state_dir, f["id"], kind, secret)
    flakes.set_credential_kind(ctx.conn, f["id"], kind)
    flakes.request_evaluation(ctx.conn, str(f["id"]))
    r = flakes.get_flake(ctx.conn, str(f["id"]))
    emit(a, r, lambda: print(f"flake {r['url']}: credential {r['credential']} (stored 0600; "
                             "it is not shown again); evaluating it again"))
    return 0


def cmd_flake_hook_secret(ctx: Ctx) -> int:
    a = ctx.args
    f = flakes.get_flake(ctx.conn, a.url)
    if a.off:
        flake_access.remove_hook_secret(ctx.runtime_cfg.state_dir, f["id"])
        flakes.set_hook_enabled(ctx.conn, f["id"], False)
        print(f"flake {f['url']}: webhook off")
        return 0
    secret = flake_access.new_hook_secret(ctx.runtime_cfg.state_dir, f["id"])
    flakes.set_hook_enabled(ctx.conn, f["id"], True)
    path = f"/api/v1/flakes/{f['id']}/hook"
    emit(a, {"secret": secret, "path": path}, lambda: print(
        f"webhook secret (shown only now): {secret}\nthe forge posts push events to "
        f"https://<router web address>{path} (content type application/json) with this secret"))
    return 0


def register(sub: Subparsers) -> None:
    fl = group(sub, "flake", "flake URLs")
    s = leaf(fl, "add", cmd_flake_add, "add a flake URL and list its nixosConfigurations")
    s.add_argument("url")
    s.add_argument("--no-wait", action="store_true", help="only queue the evaluation")
    s.add_argument("--policy", choices=flakes.POLICIES,
                   help="on_change: bind declared hosts and build changed systems by itself; "
                        "manual: neither (default: builder.flake_policy)")
    leaf(fl, "list", cmd_flake_list, "list flakes and their nixosConfigurations")
    leaf(fl, "refresh", cmd_flake_refresh, "evaluate flakes again").add_argument("url", nargs="?")
    leaf(fl, "remove", cmd_flake_remove, "remove a flake").add_argument("url")
    s = leaf(fl, "set", cmd_flake_set, "change a flake's build policy")
    s.add_argument("url")
    s.add_argument("--policy", choices=flakes.POLICIES, required=True)
    s = leaf(fl, "credential", cmd_flake_credential,
             "the access token or SSH deploy key nix fetches a private flake with")
    s.add_argument("url")
    m = s.add_mutually_exclusive_group()
    m.add_argument("--token-file", metavar="FILE", help="access token in FILE (- for stdin)")
    m.add_argument("--ssh-key", metavar="FILE", help="SSH private deploy key in FILE (- for stdin)")
    m.add_argument("--clear", action="store_true", help="remove the credential")
    s = leaf(fl, "hook-secret", cmd_flake_hook_secret,
             "make a new webhook secret (printed once) for the forge's push webhook")
    s.add_argument("url")
    s.add_argument("--off", action="store_true", help="turn the webhook off")
