"""`nixie media`: boot media (ISO, USB image, EFI binary) with the router's boot URL and a
media token inside; the tokens listed and revoked (`docs/boot-media.md`)."""

from __future__ import annotations

import argparse
import sys

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import CONFIG, JSON, Subparsers
from appliance.domain import media
from appliance.errors import InvalidInput
from appliance.nix import bootmedia


def _tokens(ctx: Ctx) -> int:
    rows = media.list_tokens(ctx.conn, host=ctx.args.host)

    def human() -> None:
        print(f"{'ID':>4}  {'HOST':<16} {'FORMAT':<6} {'USES':>4}  {'STATE':<8} URL")
        for r in rows:
            state = "revoked" if r["revoked_at"] else "live"
            print(f"{r['id']:>4}  {r['host'] or '(generic)':<16} {r['format']:<6} {r['uses']:>4}  "
                  f"{state:<8} {r['base_url']}")

    emit(ctx.args, rows, human)
    return 0


def cmd_media(ctx: Ctx) -> int:
    a = ctx.args
    if a.list:
        return _tokens(ctx)
    if a.revoke is not None:
        row = media.revoke_token(ctx.conn, a.revoke)
        emit(a, row, lambda: print(f"media token {row['id']} revoked"))
        return 0
    if bool(a.host) == bool(a.generic):
        raise InvalidInput("name a HOST or give --generic")
    if not a.output:
        raise InvalidInput("-o FILE is required")
    static = bootmedia.Static.parse(a.address, a.gateway, a.dns)
    row = bootmedia.create_media(ctx.conn, ctx.runtime_cfg, host=a.host, fmt=a.format,
                                 out=a.output, url=a.url, static=static, label=a.label or "")
    emit(a, {**row, "file": a.output}, lambda: print(
        f"wrote {a.output}: {row['format']} for {row['host'] or 'any machine'}, booting from "
        f"{row['base_url']} (media token {row['id']}; revoke with nixie media --revoke "
        f"{row['id']})", file=sys.stderr))
    return 0


def register(sub: Subparsers) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "media", parents=[CONFIG, JSON], help="boot media: ISO, USB image, EFI binary",
        description="Write boot media for HOST (or --generic) that chain to the router's boot "
                    "URL with a media token; --list and --revoke ID manage the tokens.")
    p.set_defaults(func=cmd_media)
    p.add_argument("host", nargs="?", metavar="HOST", help="the host the media boots")
    p.add_argument("--generic", action="store_true", help="media for any machine (its MAC decides)")
    p.add_argument("--format", choices=bootmedia.FORMATS, default="iso")
    p.add_argument("-o", "--output", metavar="FILE")
    p.add_argument("--url", default="lan", help="lan, vpn or public (boot.media_url)")
    p.add_argument("--address", metavar="CIDR", help="static address instead of DHCP")
    p.add_argument("--gateway", metavar="IP")
    p.add_argument("--dns", metavar="IP")
    p.add_argument("--label", metavar="TEXT")
    p.add_argument("--list", action="store_true", help="list media tokens (of HOST)")
    p.add_argument("--revoke", type=int, metavar="ID", help="revoke a media token")
