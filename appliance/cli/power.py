"""`nixie wol`: Wake-on-LAN."""

from __future__ import annotations

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import Subparsers, leaf
from appliance.router.wol import wake_host


def cmd_wol(ctx: Ctx) -> int:
    iface = ctx.runtime_cfg.lan.interface  # the LAN the services run on
    macs = wake_host(ctx.conn, ctx.args.host, interface=iface,
                     broadcast=ctx.args.broadcast or "255.255.255.255")
    emit(ctx.args, {"host": ctx.args.host, "macs": macs},
         lambda: print(f"woke {ctx.args.host} ({', '.join(macs)}) on {iface}"))
    return 0


def register(sub: Subparsers) -> None:
    s = leaf(sub, "wol", cmd_wol, "send Wake-on-LAN to a host")
    s.add_argument("host")
    s.add_argument("--broadcast", help="directed broadcast address")
