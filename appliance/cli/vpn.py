"""`nixie vpn`: WireGuard peers."""

from __future__ import annotations

from pathlib import Path

from appliance.cli.context import Ctx
from appliance.cli.output import done, emit, print_table
from appliance.cli.parser import Subparsers, group, leaf
from appliance.router import vpn


def cmd_vpn_add(ctx: Ctx) -> int:
    peer = vpn.add_peer(ctx.conn, ctx.runtime_cfg, ctx.args.name, ctx.args.public_key)
    emit(ctx.args, peer, lambda: print(f"peer {peer['name']} at {peer['address']}; "
                                       f"its config: nixie vpn config {peer['name']}"))
    return 0


def cmd_vpn_list(ctx: Ctx) -> int:
    peers = vpn.list_peers(ctx.conn)
    emit(ctx.args, peers, lambda: print_table(peers, [("NAME", "name"), ("ADDRESS", "address"),
                                                      ("PUBLIC KEY", "public_key")]))
    return 0


def cmd_vpn_remove(ctx: Ctx) -> int:
    vpn.remove_peer(ctx.conn, ctx.args.name)
    done(ctx.args, f"removed peer {ctx.args.name}", name=ctx.args.name)
    return 0


def cmd_vpn_config(ctx: Ctx) -> int:
    text = vpn.client_config(ctx.conn, ctx.runtime_cfg, ctx.args.name)
    if ctx.args.qr:
        Path(ctx.args.qr).write_text(vpn.qr_svg(text))
    print(text, end="")
    return 0


def register(sub: Subparsers) -> None:
    vp = group(sub, "vpn", "WireGuard peers")
    s = leaf(vp, "add", cmd_vpn_add, "add a peer (keys generated unless --public-key)")
    s.add_argument("name")
    s.add_argument("--public-key", help="the peer's own public key (then no config to download)")
    leaf(vp, "list", cmd_vpn_list, "list peers")
    leaf(vp, "remove", cmd_vpn_remove, "remove a peer").add_argument("name")
    s = leaf(vp, "config", cmd_vpn_config, "print a peer's client config (holds its private key)")
    s.add_argument("name")
    s.add_argument("--qr", metavar="FILE.svg", help="also write it as a QR code (SVG)")
