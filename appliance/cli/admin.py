"""`nixie admin`: administration (users)."""

from __future__ import annotations

import getpass
import sys

from appliance.cli.context import Ctx
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import users


def cmd_admin_create_user(ctx: Ctx) -> int:
    a = ctx.args
    if a.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    users.create_user(ctx.conn, a.username, password)
    print(f"created user {a.username}")
    return 0


def register(sub: Subparsers) -> None:
    ad = group(sub, "admin", "administration")
    s = leaf(ad, "create-user", cmd_admin_create_user, "create an admin user")
    s.add_argument("username")
    s.add_argument("--password-stdin", action="store_true")
