"""Boot media: write an ISO / USB image / EFI binary for a host or generic media (the answer
is the file), list the media tokens, revoke one."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Response, jsonify

from appliance.domain import media
from appliance.nix import bootmedia

from ..context import config, conn
from . import args
from .registry import route
from .schemas import CURSOR, LIMIT, SCHEMAS, STR, TOKEN_ID, page_of, ref

OPT_STR = {"type": ["string", "null"]}
SCHEMAS.update({
    "MediaToken": {"type": "object", "properties": {
        "id": {"type": "integer"}, "host": OPT_STR, "format": STR, "label": STR,
        "base_url": STR, "created_at": {"type": "number"},
        "last_used": {"type": ["number", "null"]}, "last_ip": OPT_STR,
        "uses": {"type": "integer"}, "revoked_at": {"type": ["number", "null"]}}},
    "MediaInput": {"type": "object", "required": ["format"], "properties": {
        "host": {"type": ["string", "null"], "description": "null: generic media"},
        "format": {"type": "string", "enum": list(bootmedia.FORMATS)},
        "url": {"type": "string", "enum": ["lan", "vpn", "public"]},
        "address": {**OPT_STR, "description": "static address (CIDR) instead of DHCP"},
        "gateway": OPT_STR, "dns": OPT_STR, "label": OPT_STR}},
})


def media_response(host: str | None, fmt: str, url: str, static, label: str) -> Response:
    """Build the media and answer with it as a download (what the UI's form does too)."""
    with tempfile.TemporaryDirectory(prefix="nixie-media-") as tmp:
        out = Path(tmp) / "media"
        row = bootmedia.create_media(conn(), config(), host=host, fmt=fmt, out=out, url=url,
                                     static=static, label=label)
        data = out.read_bytes()
    return Response(data, mimetype="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{bootmedia.filename(row)}"',
        "X-Nixie-Media-Token-Id": str(row["id"]), "Cache-Control": "no-store"})


@route("/media", "GET", "Boot media tokens, newest first (never the tokens themselves)",
       tag="media", params=[LIMIT, CURSOR], response=page_of(ref("MediaToken")), errors=(400,))
def list_media():
    return jsonify(args.id_page(lambda **at: media.list_tokens(conn(), **at), 100))


@route("/media", "POST", "Write boot media; the answer is the file (its token id in "
       "X-Nixie-Media-Token-Id)", tag="media", body=ref("MediaInput"),
       response={"type": "string", "format": "binary"}, status=201, errors=(400, 404, 503))
def create_media():
    d = args.body()
    static = bootmedia.Static.parse(args.want(d, "address", str, nullable=True),
                                    args.want(d, "gateway", str, nullable=True),
                                    args.want(d, "dns", str, nullable=True))
    resp = media_response(args.want(d, "host", str, nullable=True),
                          args.want(d, "format", str, True), args.want(d, "url", str) or "lan",
                          static, args.want(d, "label", str, nullable=True) or "")
    resp.status_code = 201
    return resp


@route("/media/<int:token_id>", "DELETE", "Revoke a boot media token", tag="media",
       params=[TOKEN_ID], response=ref("MediaToken"), errors=(404,))
def revoke_media(token_id: int):
    return jsonify(media.revoke_token(conn(), token_id))
