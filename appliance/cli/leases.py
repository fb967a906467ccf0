"""`nixie lease`: the DHCP leases."""

from __future__ import annotations

import argparse

from appliance.cli.context import Ctx, Leaf
from appliance.cli.output import _ts, emit, print_table
from appliance.domain import leases


def cmd_lease_list(ctx: Ctx) -> int:
    rows = leases.list_leases(ctx.conn, include_expired=ctx.args.all)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("IP", "ip"), ("MAC", "mac"), ("HOST", "host"), ("HOSTNAME", "hostname"),
        ("STATE", "state"), ("EXPIRES", lambda r: _ts(r["expires"]))]))
    return 0


def register(sub: argparse._SubParsersAction, leaf: Leaf, common: argparse.ArgumentParser,
             listing: argparse.ArgumentParser) -> None:
    le = sub.add_parser("lease", help="DHCP leases").add_subparsers(dest="sub", required=True)
    leaf(le, "list", cmd_lease_list, "list leases").add_argument(
        "--all", action="store_true", help="include expired and released")
