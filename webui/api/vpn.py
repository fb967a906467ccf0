"""WireGuard peers: list, add, remove; a peer's client config and its QR code."""

from __future__ import annotations

from flask import Response, jsonify

from appliance.router import vpn

from ..context import config, conn
from . import args
from .registry import route
from .schemas import NAME, SCHEMAS, STR, arr, ref

PEER = NAME | {"name": "name"}

SCHEMAS.update({  # this resource's records, in the one OpenAPI document
    "VpnPeer": {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": STR, "public_key": STR, "address": STR,
        "created_at": {"type": "number"},
        "has_private_key": {"type": "boolean",
                            "description": "the router made its keys: its config can be fetched"}}},
    "VpnPeerInput": {"type": "object", "required": ["name"], "properties": {
        "name": STR, "public_key": {"type": ["string", "null"],
                                    "description": "the peer's own key; absent: the router "
                                                   "makes a key pair"}}},
})


@route("/vpn/peers", "GET", "WireGuard peers", tag="vpn", response=arr(ref("VpnPeer")))
def list_peers():
    return jsonify(vpn.list_peers(conn()))


@route("/vpn/peers", "POST", "Add a WireGuard peer (the next free tunnel address)", tag="vpn",
       body=ref("VpnPeerInput"), response=ref("VpnPeer"), status=201, errors=(400, 409))
def add_peer():
    d = args.body()
    peer = vpn.add_peer(conn(), config(), args.want(d, "name", str, True),
                        args.want(d, "public_key", str, nullable=True))
    return jsonify(peer), 201


@route("/vpn/peers/<name>", "DELETE", "Remove a WireGuard peer", tag="vpn", params=[PEER],
       status=204, errors=(404,))
def remove_peer(name: str):
    vpn.remove_peer(conn(), name)
    return Response(status=204)


@route("/vpn/peers/<name>/config", "GET", "The peer's wg-quick config (holds its private key)",
       tag="vpn", params=[PEER], response={"type": "string"}, errors=(404, 409))
def peer_config(name: str):
    return Response(vpn.client_config(conn(), config(), name), mimetype="text/plain")


@route("/vpn/peers/<name>/qr.svg", "GET", "The peer's config as a QR code (SVG)", tag="vpn",
       params=[PEER], response={"type": "string"}, errors=(404, 409))
def peer_qr(name: str):
    return Response(vpn.qr_svg(vpn.client_config(conn(), config(), name)),
                    mimetype="image/svg+xml")
