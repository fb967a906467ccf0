"""`nixie admin`: administration (users)."""

from __future__ import annotations

import getpass
import sys

from appliance.cli.context import Ctx
from appliance.cli.output import emit
from appliance.cli.parser import Subparsers, group, leaf
from appliance.domain import tls_cert, users


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


def cmd_admin_cert_install(ctx: Ctx) -> int:
    """The admin's certificate for the web UI: serve takes it for new connections
    within a second (no restart)."""
    cert = tls_cert.install(ctx.cfg, ctx.args.cert, ctx.args.key)
    emit(ctx.args, cert.to_dict(),
         lambda: print(f"installed {cert.path}: {cert.subject}, sha256 {cert.fingerprint}, "
                       f"valid until {cert.not_after}"))
    return 0


def cmd_admin_cert_show(ctx: Ctx) -> int:
    web = tls_cert.web_summary(ctx.runtime_cfg)
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
