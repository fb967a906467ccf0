"""`nixie lease`: the DHCP leases."""

from __future__ import annotations

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import leases


def cmd_lease_list(ctx: Ctx) -> int:
    rows = leases.list_leases(ctx.conn, include_expired=ctx.args.all)
    rows += leases.list_leases6(ctx.conn, include_expired=ctx.args.all)  # DHCPv6 bindings
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("IP", "ip"), ("MAC", "mac"), ("HOST", "host"), ("HOSTNAME", "hostname"),
        ("STATE", "state"), ("EXPIRES", lambda r: timestamp(r["expires"]))]))
    return 0


def register(sub: Subparsers) -> None:
    le = group(sub, "lease", "DHCP leases")
    leaf(le, "list", cmd_lease_list, "list leases").add_argument(
        "--all", action="store_true", help="include expired and released")
