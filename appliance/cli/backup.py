"""`nixie backup FILE`, `nixie restore FILE` and `nixie gc`: the router's state in one
archive (`appliance.state.backup`) and the Nix store paths of generations it no longer
keeps (`appliance.nix.gc`)."""

from __future__ import annotations

from pathlib import Path

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import Subparsers, leaf
from appliance.nix import gc
from appliance.state import backup as state_backup


def _report(ctx: Ctx, data: dict, lines: list[str]) -> int:
    """`data` with --json, else the non-empty `lines`."""
    emit(ctx.args, data, lambda: print("\n".join(line for line in lines if line)))
    return 0


def cmd_backup(ctx: Ctx) -> int:
    res = state_backup.backup(ctx.cfg.state_dir, ctx.args.file)
    return _report(ctx, res.to_dict(), [
        f"wrote {res.path} ({res.size} bytes): the database (schema {res.schema_version}) "
        f"and {res.files - 1} files of {ctx.cfg.state_dir}",
        res.skipped and "not in it (symlinks or special files): " + ", ".join(res.skipped)])


def cmd_restore(ctx: Ctx) -> int:
    res = state_backup.restore(ctx.args.file, ctx.cfg.state_dir)
    roots = gc.reroot(ctx.cfg, ctx.store)  # the store is opened now: the restored database
    missing = roots["missing"]
    return _report(ctx, {**res.to_dict(), "gc_roots": roots}, [
        f"restored {ctx.args.file} into {res.state_dir}: the database (schema "
        f"{res.schema_version}) and {res.files - 1} files",
        res.previous and f"the previous state directory is kept as {res.previous}",
        f"GC roots: {roots['made']} made"
        + (f"; {len(missing)} generations' systems are not in this machine's Nix store (build "
           "them again): " + ", ".join(missing) if missing else "")])


def cmd_gc(ctx: Ctx) -> int:
    res = gc.collect(ctx.runtime_cfg, ctx.store)
    return (1 if res.error else 0) | _report(ctx, res.to_dict(), [
        f"deleted {len(res.deleted)} store paths of {res.candidates} dropped generations' "
        f"closures, freeing {res.freed_bytes} bytes; {res.kept_alive} still in use kept",
        res.roots_dropped and "GC roots of removed hosts dropped: " + ", ".join(res.roots_dropped),
        res.error and f"FAILED: {res.error}"])


def register(sub: Subparsers) -> None:
    b = leaf(sub, "backup", cmd_backup,
             "write the router's state (database, keys, certificates, settings) to one archive")
    b.add_argument("file", type=Path, help="the archive to write (0600)")
    r = leaf(sub, "restore", cmd_restore,
             "restore an archive `nixie backup` wrote into the state directory (serve must be "
             "stopped; the previous directory is kept beside it)")
    r.add_argument("file", type=Path, help="the archive")
    leaf(sub, "gc", cmd_gc, "delete the Nix store paths of generations the router no longer keeps")
