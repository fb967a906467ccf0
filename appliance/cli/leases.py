"""`nixie lease`: the DHCP leases."""

from __future__ import annotations

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import leases


def cmd_lease_list(ctx: Ctx) -> int:
    rows = leases.list_leases(ctx.conn, include_expired=ctx.args.all, family=ctx.args.family)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("IP", "ip"), ("MAC", "mac"), ("HOST", "host"), ("HOSTNAME", "hostname"),
        ("STATE", "state"), ("EXPIRES", lambda r: timestamp(r["expires"])),
        ("DUID/IAID", lambda r: f"{r['duid']}/{r['iaid']}" if r["family"] == 6 else "")]))
    return 0


def register(sub: Subparsers) -> None:
    le = group(sub, "lease", "DHCP leases")
    ls = leaf(le, "list", cmd_lease_list, "list leases (DHCPv4 and DHCPv6)")
    ls.add_argument("--all", action="store_true", help="include expired and released")
    ls.add_argument("--family", type=int, choices=(4, 6), help="only IPv4 or only IPv6 leases")
