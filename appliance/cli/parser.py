"""How a verb module adds its verbs to `nixie`'s parser: `group` for a verb with
sub-verbs (`nixie host ...`), `leaf` for one that runs a `cmd_*` function."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from appliance.cli.context import Ctx
from appliance.config.schema import DEFAULT_CONFIG_PATH
from appliance.errors import UsageError

Subparsers = argparse._SubParsersAction
CONFIG_HELP = f"config file (default: $NIXIE_CONFIG, then {DEFAULT_CONFIG_PATH})"


class Parser(argparse.ArgumentParser):
    """`nixie`'s parsers (its sub-parsers are of the same class): a usage error raises
    UsageError (exit 2; with --json a JSON error) instead of printing and exiting inside
    argparse. A verb's parser with a `default_verb` sends a first word that names none of
    its sub-verbs to that one (`nixie build HOST` is `nixie build start HOST`)."""

    default_verb: str | None = None

    def error(self, message: str):
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")

    def _get_values(self, action, arg_strings):
        if (self.default_verb and isinstance(action, argparse._SubParsersAction) and arg_strings
                and arg_strings[0] not in action.choices and not arg_strings[0].startswith("-")):
            arg_strings = [self.default_verb, *arg_strings]
        return super()._get_values(action, arg_strings)


# options a leaf also takes after its verb (`nixie host list --json`); unset, the
# top-level parser's defaults hold
CONFIG = argparse.ArgumentParser(add_help=False)
CONFIG.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)
JSON = argparse.ArgumentParser(add_help=False)
JSON.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def group(sub: Subparsers, name: str, help_: str, default: str | None = None) -> Subparsers:
    """`nixie NAME`, whose sub-verbs are added to what this returns. With `default`, a
    first word that is no sub-verb is the first argument of sub-verb `default`."""
    p = sub.add_parser(name, help=help_, description=help_)
    if default:
        assert isinstance(p, Parser), "the root parser is a Parser"
        p.default_verb = default
    return p.add_subparsers(dest="sub", required=True)


def leaf(parent: Subparsers, name: str, func: Callable[[Ctx], int], help_: str,
         parents: Sequence[argparse.ArgumentParser] = (CONFIG, JSON)) -> argparse.ArgumentParser:
    """The verb `name` under `parent`, which runs `func`; add its arguments to what this returns."""
    sp = parent.add_parser(name, parents=list(parents), help=help_, description=help_)
    sp.set_defaults(func=func)
    return sp
