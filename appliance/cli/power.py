"""`nixie wol`: Wake-on-LAN; `nixie power`: power control through a host's BMC."""

from __future__ import annotations

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import Subparsers, leaf
from appliance.router.bmc import power
from appliance.router.wol import wake_host


def cmd_wol(ctx: Ctx) -> int:
    iface = ctx.runtime_cfg.lan.interface  # the LAN the services run on
    macs = wake_host(ctx.conn, ctx.args.host, interface=iface,
                     broadcast=ctx.args.broadcast or "255.255.255.255")
    emit(ctx.args, {"host": ctx.args.host, "macs": macs},
         lambda: print(f"woke {ctx.args.host} ({', '.join(macs)}) on {iface}"))
    return 0


def cmd_power(ctx: Ctx) -> int:
    a = ctx.args
    if a.action == "boot":
        out = power.boot_from_network(ctx.conn, a.host, interface=ctx.runtime_cfg.lan.interface)
        emit(a, out.to_dict(), lambda: print(out.message + (
            f" (BMC failed: {out.bmc_error})" if out.bmc_error else "")))
        return 0
    r = power.power_action(ctx.conn, a.host, a.action)
    emit(a, r.to_dict(), lambda: print(f"{a.host}: {r.message}"))
    return 0


def register(sub: Subparsers) -> None:
    s = leaf(sub, "wol", cmd_wol, "send Wake-on-LAN to a host")
    s.add_argument("host")
    s.add_argument("--broadcast", help="directed broadcast address")
    s = leaf(sub, "power", cmd_power,
             "power control through the host's BMC: status, on, off, cycle, pxe (next boot "
             "from the network, once), boot (pxe then on or cycle; Wake-on-LAN without a BMC)")
    s.add_argument("host")
    s.add_argument("action", choices=(*power.ACTIONS, "boot"))
