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

# options a leaf also takes after its verb (`nixie host list --json`); unset, the
# top-level parser's defaults hold


class Parser(argparse.ArgumentParser):
    """`nixie`'s parsers: a usage error raises UsageError (exit 2; with --json a JSON
    error) instead of printing and exiting inside argparse."""

    def error(self, message: str):
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


CONFIG = argparse.ArgumentParser(add_help=False)
CONFIG.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)
JSON = argparse.ArgumentParser(add_help=False)
JSON.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


class _DefaultVerbParser(Parser):
    """A verb's parser whose first word, when it names none of its sub-verbs, goes to
    `default_verb` (`nixie build HOST` is `nixie build start HOST`)."""

    default_verb: str = ""

    def _get_values(self, action, arg_strings):
        if (isinstance(action, argparse._SubParsersAction) and arg_strings
                and arg_strings[0] not in action.choices and not arg_strings[0].startswith("-")):
            arg_strings = [self.default_verb, *arg_strings]
        return super()._get_values(action, arg_strings)


def group(sub: Subparsers, name: str, help_: str, default: str | None = None) -> Subparsers:
    """`nixie NAME`, whose sub-verbs are added to what this returns. With `default`, a
    first word that is no sub-verb is the first argument of sub-verb `default`."""
    p = sub.add_parser(name, help=help_, description=help_)
    if default:
        p.__class__ = _DefaultVerbParser
        p.default_verb = default
    return p.add_subparsers(dest="sub", required=True)


def leaf(parent: Subparsers, name: str, func: Callable[[Ctx], int], help_: str,
         parents: Sequence[argparse.ArgumentParser] = (CONFIG, JSON)) -> argparse.ArgumentParser:
    """The verb `name` under `parent`, which runs `func`; add its arguments to what this returns."""
    sp = parent.add_parser(name, parents=list(parents), help=help_, description=help_)
    sp.set_defaults(func=func)
    return sp
