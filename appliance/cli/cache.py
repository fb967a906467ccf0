"""`nixie cache`: the router's binary cache as a LAN machine needs it."""

from __future__ import annotations

import sys

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import Subparsers, group, leaf
from appliance.nix.cache_info import cache_info


def cmd_cache_key(ctx: Ctx) -> int:
    info = cache_info(ctx.runtime_cfg)

    def human() -> None:
        if info.public_key is None:
            print(f"the cache at {info.url} has no key yet: nixie serve makes it when it starts",
                  file=sys.stderr)
            return
        print(f"url:        {info.url}\npublic key: {info.public_key}\n\n"
              "NixOS configuration of a LAN machine that uses the cache:\n" + info.snippet, end="")

    emit(ctx.args, info.to_dict(), human)
    return 0 if info.public_key else 1


def register(sub: Subparsers) -> None:
    c = group(sub, "cache", "the router's binary cache")
    leaf(c, "key", cmd_cache_key, "the cache's URL, public key and a nix.settings snippet")
