"""The `nixie` command. Every verb works on the same DB as a running `serve`.

Each verb group lives in its own module (serve, config, flakes, hosts, leases,
builds, power, status, admin, network, vpn) with its `cmd_*` functions and a
`register(sub)` that adds its verbs (with `appliance.cli.parser`); this module
assembles the parser and maps errors to exit codes (docs/cli.md): 0 ok, 1 failure (also
something that does not exist, a conflict, a failed build), 2 a usage or config file error.
With --json an error is the JSON document `{"error": message, "code": code}` on stdout
(`appliance.cli.output.error`), else `nixie: message` on stderr."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence

from appliance import __version__
from appliance.cli import (
    admin,
    backup,
    builds,
    cache,
    completion,
    config,
    flakes,
    hosts,
    leases,
    media,
    network,
    power,
    serve,
    status,
    vpn,
)
from appliance.cli.context import Ctx
from appliance.cli.output import error
from appliance.cli.parser import CONFIG_HELP, Parser
from appliance.errors import NixieError

# in the order `nixie --help` lists them
GROUPS = (serve, config, flakes, hosts, leases, builds, power, status, admin, network, vpn,
          cache, backup, completion, media)


def build_parser() -> Parser:
    p = Parser(prog="nixie", description="Nixie Router: PXE-boot bare metal into NixOS.",
               epilog="exit codes: 0 ok, 1 failure, 2 usage or config error")
    p.add_argument("--version", action="version", version=f"nixie {__version__}")
    p.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)
    p.add_argument("--json", action="store_true", default=False,
                   help="print JSON (errors too: {\"error\": ..., \"code\": ...})")
    p.set_defaults(root_parser=p)
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def json_mode(args: argparse.Namespace | None, argv: list[str]) -> bool:
    """Whether errors print as JSON: the parsed `--json` option; when the command line
    did not parse (a usage error), a `--json` among the options (before any `--`)."""
    if args is not None:
        return bool(getattr(args, "json", False))
    return "--json" in (argv[:argv.index("--")] if "--" in argv else argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        return args.func(Ctx(args)) or 0
    except NixieError as e:
        error(json_mode(args, argv), str(e), e.code, getattr(e, "field", None))
        return e.exit_code
    except (OSError, sqlite3.Error) as e:  # the state dir or DB unusable: say so, no trace
        error(json_mode(args, argv), f"{type(e).__name__}: {e}", "failed")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
