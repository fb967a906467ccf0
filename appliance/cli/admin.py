"""`nixie admin`: administration (users)."""

from __future__ import annotations

import getpass
import sys

from appliance.cli.context import Ctx
from appliance.cli.output import done, emit, print_table, timestamp
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import tls_cert, users
from appliance.errors import InvalidInput
from appliance.runtime.wiring import web_listen_now


def _read_password(a) -> str | None:
    """The new password: a line of stdin with --password-stdin, else asked twice (None
    when the two differ)."""
    if a.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise InvalidInput("passwords differ", field="password")
    return password


def cmd_admin_create_user(ctx: Ctx) -> int:
    a = ctx.args
    password = _read_password(a)
    if password is None:
        return 1
    users.create_user(ctx.conn, a.username, password)
    done(a, f"created user {a.username}", username=a.username)
    return 0


def cmd_admin_cert_install(ctx: Ctx) -> int:
    """The admin's certificate for the web UI: serve takes it for new connections
    within a second (no restart)."""
    cert = tls_cert.install(ctx.cfg, ctx.args.cert, ctx.args.key)
    emit(ctx.args, cert.to_dict(),
         lambda: print(f"installed {cert.path}: {cert.subject}, sha256 {cert.fingerprint}, "
                       f"valid until {cert.not_after}"))
    return 0


def cmd_admin_cert_show(ctx: Ctx) -> int:
    web = tls_cert.web_summary(ctx.runtime_cfg, web_listen_now(ctx.runtime_cfg, ctx.conn))
    cert = web["certificate"]

    def human():
        if not web["tls"]:
            print("web.tls is off: the admin UI is plain HTTP")
        elif cert is None:
            print("no certificate yet: nixie serve makes one at its first start")
        else:
            print(f"{cert['path']}: {cert['subject']}\n  sha256 {cert['sha256']}"
                  f"{' (self-signed)' if cert['self_signed'] else ''}, "
                  f"valid until {cert['not_after']}")

    emit(ctx.args, web, human)
    return 0


def cmd_admin_passwd(ctx: Ctx) -> int:
    """Set a user's password (no current password: this runs on the router, as root)."""
    a = ctx.args
    password = _read_password(a)
    if password is None:
        return 1
    users.set_password(ctx.conn, a.username, password)
    done(a, f"password of {a.username} changed; their browser sessions are logged out",
         username=a.username)
    return 0


def cmd_admin_users(ctx: Ctx) -> int:
    rows = users.list_users(ctx.conn)
    emit(ctx.args, rows, lambda: print_table(rows, [
        ("USER", "username"), ("ROLE", "role"), ("ADDED", lambda r: timestamp(r["created_at"])),
        ("LAST LOGIN", lambda r: timestamp(r["last_login"]))]))
    return 0


def cmd_admin_remove_user(ctx: Ctx) -> int:
    users.remove_user(ctx.conn, ctx.args.username, acting_user_id=None)
    done(ctx.args, f"removed user {ctx.args.username}", username=ctx.args.username)
    return 0


def register(sub: Subparsers) -> None:
    ad = group(sub, "admin", "administration")
    s = leaf(ad, "create-user", cmd_admin_create_user, "create an admin user")
    s.add_argument("username")
    s.add_argument("--password-stdin", action="store_true")
    cert = group(ad, "cert", "the web UI's TLS certificate")
    leaf(cert, "show", cmd_admin_cert_show, "the certificate the web UI serves, and its fingerprint")
    s = leaf(cert, "install", cmd_admin_cert_install,
             "serve your own certificate (PEM; a chain may follow it) and key")
    s.add_argument("cert")
    s.add_argument("key")
    s = leaf(ad, "passwd", cmd_admin_passwd, "set an admin's password (ends their sessions)")
    s.add_argument("username")
    s.add_argument("--password-stdin", action="store_true")
    leaf(ad, "users", cmd_admin_users, "list the admin users")
    leaf(ad, "remove-user", cmd_admin_remove_user,
         "remove an admin (not the last one)").add_argument("username")
