"""The `nixie` command. Every verb works on the same DB as a running `serve`.

Each verb group lives in its own module (serve, config, flakes, hosts, leases,
builds, power, status, admin, network, vpn) with its `cmd_*` functions and a
`register` that adds its subparsers; this module assembles the parser and maps
errors to exit codes: 2 for a bad config file or usage, 3 for something that
does not exist, else the error's own code (1)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from appliance.cli import (
    admin,
    builds,
    config,
    flakes,
    hosts,
    leases,
    network,
    power,
    serve,
    status,
    vpn,
)
from appliance.cli.context import Ctx
from appliance.config.schema import DEFAULT_CONFIG_PATH
from appliance.errors import ConfigError, NixieError, NotFound

# in the order `nixie --help` lists them
GROUPS = (serve, config, flakes, hosts, leases, builds, power, status, admin, network, vpn)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=f"config file (default: $NIXIE_CONFIG, then {DEFAULT_CONFIG_PATH})")
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print JSON")

    p = argparse.ArgumentParser(prog="nixie",
                                description="Nixie Router: PXE-boot bare metal into NixOS.")
    p.add_argument("--config", metavar="FILE", default=None,
                   help=f"config file (default: $NIXIE_CONFIG, then {DEFAULT_CONFIG_PATH})")
    p.add_argument("--json", action="store_true", default=False, help="print JSON")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    both = [common, listing]

    def leaf(parent, name, func, help_, parents=both):
        sp = parent.add_parser(name, parents=parents, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    for group in GROUPS:
        group.register(sub, leaf, common, listing)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
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
