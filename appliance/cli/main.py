"""The `nixie` command. Every verb works on the same DB as a running `serve`.

Each verb group lives in its own module (serve, config, flakes, hosts, leases,
builds, power, status, admin, network, vpn) with its `cmd_*` functions and a
`register(sub)` that adds its verbs (with `appliance.cli.parser`); this module
assembles the parser and maps errors to exit codes: 2 for a bad config file or usage, 3 for something that
does not exist, else the error's own code (1)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from appliance.cli import (
    admin,
    builds,
    cache,
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
from appliance.cli.parser import CONFIG_HELP
from appliance.errors import ConfigError, NixieError, NotFound

# in the order `nixie --help` lists them
GROUPS = (serve, config, flakes, hosts, leases, builds, power, status, admin, network, vpn,
          cache, media)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nixie",
                                description="Nixie Router: PXE-boot bare metal into NixOS.")
    p.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)
    p.add_argument("--json", action="store_true", default=False, help="print JSON")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Ctx(args)
    try:
        return args.func(ctx) or 0
    except ConfigError as e:
        print(f"nixie: {e}", file=sys.stderr)
        return 2
    except NotFound as e:
        print(f"nixie: {e}", file=sys.stderr)
        return 3
    except NixieError as e:
        print(f"nixie: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
