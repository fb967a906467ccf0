"""`nixie config`: the config file (example, check) and the settings an admin may
change while the appliance runs (show, set)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table
from appliance.cli.parser import Subparsers, group, leaf
from appliance.config.resolve import NETWORK_KEYS, lookup, resolve
from appliance.config.schema import Config, example_config
from appliance.domain import settings
from appliance.errors import ConfigError, InvalidInput
from appliance.state.db import now

APPLY_WAIT_SECONDS = 3.0  # nixie serve applies a change within 2 s


def cmd_config_example(ctx: Ctx) -> int:
    a = ctx.args
    print(json.dumps(example_config(a.state_dir, a.interface, a.address), indent=2))
    return 0


def cmd_config_check(ctx: Ctx) -> int:
    cfg = ctx.cfg
    emit(ctx.args, cfg.to_dict(), lambda: print(f"{cfg.path}: OK"))
    return 0


# ------------------------------------------------------------------ show


def sources(cfg: Config, conn) -> dict[str, dict[str, Any]]:
    """{key: {value, source[, path]}} for every editable key. `source` is where the
    running value comes from: `file`, `override` (stored by the web UI, the API or
    `config set`), `network` (the confirmed network settings) or `locked` (the file
    pins it; `path` names the file). Stored settings the file no longer accepts do
    not run (`settings.effective_config`): then every value is the file's."""
    stored, net = settings.overrides(conn), settings.network(conn)
    try:
        running = resolve(cfg, stored, net)
    except ConfigError as e:
        print(f"nixie: the stored settings do not fit the config file ({e}); "
              "the file's values run", file=sys.stderr)
        running, stored, net = cfg, {}, None
    values = running.to_dict()
    pinned = settings.locked(cfg)
    out: dict[str, dict[str, Any]] = {}
    for key in settings.EDITABLE:
        entry: dict[str, Any] = {"value": lookup(values, key), "source": "file"}
        if key in pinned:
            entry.update(source="locked", path=pinned[key])
        elif net is not None and key in NETWORK_KEYS:
            entry["source"] = "network"
        elif key in stored:
            entry["source"] = "override"
        out[key] = entry
    return out


def _value_text(value: Any) -> str:
    """A value as `config set` takes it (JSON)."""
    return json.dumps(value)


def cmd_config_show(ctx: Ctx) -> int:
    rows = sources(ctx.cfg, ctx.conn)
    emit(ctx.args, rows, lambda: print_table(
        [{"key": k, **v} for k, v in rows.items()],
        [("KEY", "key"), ("VALUE", lambda r: _value_text(r["value"])),
         ("SOURCE", lambda r: f"locked ({r['path']})" if r["source"] == "locked"
          else r["source"])]))
    return 0


# ------------------------------------------------------------------ set


def assignment(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is JSON when it parses as JSON, else the string itself."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _naming_key(e: InvalidInput) -> str:
    """The error's message, led by the key at fault unless it names it already."""
    message = str(e)
    if e.field and not re.search(rf"(?<![\w.]){re.escape(e.field)}(?![\w.])", message):
        return f"{e.field}: {message}"
    return message


def cmd_config_set(ctx: Ctx) -> int:
    """Store the values (all or nothing), then tell whether `nixie serve` applied them."""
    cfg, conn = ctx.cfg, ctx.conn
    values = dict(ctx.args.assignments)
    before = settings.effective_values(cfg, conn)
    since = now()
    try:
        after = settings.update(cfg, conn, values, who="cli")
    except InvalidInput as e:
        raise InvalidInput(_naming_key(e), field=e.field) from None
    changed = [k for k in settings.EDITABLE if before.get(k) != after.get(k)]
    outcome, applied = settings.apply_outcome(conn, since, timeout=APPLY_WAIT_SECONDS)

    def human() -> None:
        for key in values:
            print(f"{key} = {_value_text(after[key])}")
        if outcome == "unchanged":
            print("unchanged")
        elif outcome == "saved":
            print("saved; applies when nixie serve starts")
        elif outcome == "pending":
            print("saved; nixie serve has not applied it yet "
                  "(see nixie events --kind 'settings.*')")
        elif outcome == "applied":
            print(f"applied to: {', '.join(applied['services']) or 'no service'}")
        else:
            print(f"nixie: saved but not applied: {applied['error']}", file=sys.stderr)

    emit(ctx.args, {"values": after, "changed": changed, "outcome": outcome, "apply": applied},
         human)
    return 1 if outcome == "failed" else 0


def register(sub: Subparsers) -> None:
    cfgp = group(sub, "config", "the config file, and the settings an admin may change")
    s = leaf(cfgp, "example", cmd_config_example, "print a config that works in the lab", [])
    s.add_argument("--state-dir", default="/var/lib/nixie")
    s.add_argument("--interface", default="br-lan")
    s.add_argument("--address", default="10.77.0.1/24")
    leaf(cfgp, "check", cmd_config_check, "validate the config file")
    leaf(cfgp, "show", cmd_config_show,
         "the settings an admin may change: the value that runs and where it comes from")
    s = leaf(cfgp, "set", cmd_config_set,
             "change settings (all or nothing); a running nixie serve applies them")
    s.add_argument("assignments", nargs="+", type=assignment, metavar="KEY=VALUE",
                   help="VALUE is JSON (7, true, [\"a\", \"b\"]) or else a plain string; "
                   "keys: " + ", ".join(settings.EDITABLE))
