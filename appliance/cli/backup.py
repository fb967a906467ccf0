"""`nixie backup FILE`, `nixie restore FILE` and `nixie gc`: the router's state in one
archive (`appliance.state.backup`) and the Nix store paths of generations it no longer
keeps (`appliance.nix.gc`)."""

from __future__ import annotations

from pathlib import Path

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import Subparsers, leaf
from appliance.config.schema import load_config
from appliance.nix import gc
from appliance.state import backup as state_backup
from appliance.state.db import Store


def cmd_backup(ctx: Ctx) -> int:
    res = state_backup.backup(ctx.cfg.state_dir, ctx.args.file)
    data = res.to_dict()

    def human() -> None:
        print(f"wrote {res.path} ({res.size} bytes): the database (schema {res.schema_version}) "
              f"and {res.files - 1} files of {ctx.cfg.state_dir}")
        if res.skipped:
            print("not in it (symlinks or special files): " + ", ".join(res.skipped))

    emit(ctx.args, data, human)
    return 0


def cmd_restore(ctx: Ctx) -> int:
    cfg = ctx.cfg
    res = state_backup.restore(ctx.args.file, cfg.state_dir)
    cfg = load_config(ctx.args.config)
    store = Store(cfg.db_path)
    roots = gc.reroot(cfg, store)
    data = {**res.to_dict(), "gc_roots": roots}

    def human() -> None:
        print(f"restored {ctx.args.file} into {res.state_dir}: the database (schema "
              f"{res.schema_version}) and {res.files - 1} files")
        if res.previous:
            print(f"the previous state directory is kept as {res.previous}")
        print(f"GC roots: {roots['made']} made"
              + (f"; {len(roots['missing'])} generations' systems are not in this machine's Nix "
                 "store (build them again): " + ", ".join(roots["missing"]) if roots["missing"] else ""))

    emit(ctx.args, data, human)
    return 0


def cmd_gc(ctx: Ctx) -> int:
    res = gc.collect(ctx.runtime_cfg, ctx.store)
    data = res.to_dict()

    def human() -> None:
        print(f"deleted {len(res.deleted)} store paths of {res.candidates} dropped generations' "
              f"closures, freeing {res.freed_bytes} bytes; {res.kept_alive} still in use kept")
        if res.roots_dropped:
            print("GC roots of removed hosts dropped: " + ", ".join(res.roots_dropped))

    emit(ctx.args, data, human)
    return 0


def register(sub: Subparsers) -> None:
    b = leaf(sub, "backup", cmd_backup,
             "write the router's state (database, keys, certificates, settings) to one archive")
    b.add_argument("file", type=Path, help="the archive to write (0600)")
    r = leaf(sub, "restore", cmd_restore,
             "restore an archive `nixie backup` wrote into the state directory (serve must be "
             "stopped; the previous directory is kept beside it)")
    r.add_argument("file", type=Path, help="the archive")
    leaf(sub, "gc", cmd_gc, "delete the Nix store paths of generations the router no longer keeps")
