"""API tokens: list, create (the secret is in the answer, once), revoke."""

from __future__ import annotations

from flask import g, jsonify

from appliance.domain import apitokens

from ..context import conn
from . import args
from .registry import route
from .schemas import STR, TOKEN_ID, arr, ref


@route("/tokens", "GET", "API tokens (never their secrets)", tag="tokens", response=arr(ref("Token")))
def list_tokens():
    return jsonify(apitokens.list_tokens(conn()))


@route("/tokens", "POST", "Create an API token; the answer holds its secret, once", tag="tokens",
       body={"type": "object", "required": ["name"], "properties": {"name": STR}},
       response=ref("Token"), status=201, errors=(400,))
def create_token():
    tok, secret = apitokens.create_token(conn(), g.user["id"],
                                         args.want(args.body(), "name", str, True))
    return jsonify(tok | {"token": secret}), 201


@route("/tokens/<int:token_id>", "DELETE", "Revoke an API token", tag="tokens",
       params=[TOKEN_ID], response=ref("Token"), errors=(404,))
def revoke_token(token_id: int):
    return jsonify(apitokens.revoke_token(conn(), token_id))
