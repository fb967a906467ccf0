"""`nixie admin`: administration (users)."""

from __future__ import annotations

import getpass
import sys

from appliance.cli.context import Ctx
from appliance.cli.output import emit, print_table, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import users


def _read_password(a) -> str | None:
    """The new password: a line of stdin with --password-stdin, else asked twice (None
    when the two differ)."""
    if a.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        print("passwords differ", file=sys.stderr)
        return None
    return password


def cmd_admin_create_user(ctx: Ctx) -> int:
    a = ctx.args
    password = _read_password(a)
    if password is None:
        return 1
    users.create_user(ctx.conn, a.username, password)
    print(f"created user {a.username}")
    return 0


def cmd_admin_passwd(ctx: Ctx) -> int:
    """Set a user's password (no current password: this runs on the router, as root)."""
    a = ctx.args
    password = _read_password(a)
    if password is None:
        return 1
    users.set_password(ctx.conn, a.username, password)
    print(f"password of {a.username} changed; their browser sessions are logged out")
    return 0


def cmd_admin_users(ctx: Ctx) -> int:
    rows = users.list_users(ctx.conn)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("USER", "username"), ("ROLE", "role"), ("ADDED", lambda r: timestamp(r["created_at"])),
        ("LAST LOGIN", lambda r: timestamp(r["last_login"]))]))
    return 0


def cmd_admin_remove_user(ctx: Ctx) -> int:
    users.remove_user(ctx.conn, ctx.args.username, acting_user_id=None)
    print(f"removed user {ctx.args.username}")
    return 0


def register(sub: Subparsers) -> None:
    ad = group(sub, "admin", "administration")
    s = leaf(ad, "create-user", cmd_admin_create_user, "create an admin user")
    s.add_argument("username")
    s.add_argument("--password-stdin", action="store_true")
    s = leaf(ad, "passwd", cmd_admin_passwd, "set an admin's password (ends their sessions)")
    s.add_argument("username")
    s.add_argument("--password-stdin", action="store_true")
    leaf(ad, "users", cmd_admin_users, "list the admin users")
    leaf(ad, "remove-user", cmd_admin_remove_user,
         "remove an admin (not the last one)").add_argument("username")
