"""How a verb module adds its verbs to `nixie`'s parser: `group` for a verb with
sub-verbs (`nixie host ...`), `leaf` for one that runs a `cmd_*` function."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from appliance.cli.context import Ctx
from appliance.config.schema import DEFAULT_CONFIG_PATH

Subparsers = argparse._SubParsersAction
CONFIG_HELP = f"config file (default: $NIXIE_CONFIG, then {DEFAULT_CONFIG_PATH})"

# options a leaf also takes after its verb (`nixie host list --json`); unset, the
# top-level parser's defaults hold
CONFIG = argparse.ArgumentParser(add_help=False)
CONFIG.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)
JSON = argparse.ArgumentParser(add_help=False)
JSON.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def group(sub: Subparsers, name: str, help_: str) -> Subparsers:
    """`nixie NAME`, whose sub-verbs are added to what this returns."""
    return sub.add_parser(name, help=help_).add_subparsers(dest="sub", required=True)


def leaf(parent: Subparsers, name: str, func: Callable[[Ctx], int], help_: str,
         parents: Sequence[argparse.ArgumentParser] = (CONFIG, JSON)) -> argparse.ArgumentParser:
    """The verb `name` under `parent`, which runs `func`; add its arguments to what this returns."""
    sp = parent.add_parser(name, parents=list(parents), help=help_, description=help_)
    sp.set_defaults(func=func)
    return sp
