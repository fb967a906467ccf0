"""The router's binary cache as a LAN machine needs it: URL, public key, NixOS snippet."""

from __future__ import annotations

from flask import jsonify

from appliance.nix.cache_info import cache_info

from ..context import config
from .registry import route
from .schemas import ref


@route("/cache", "GET", "The router's binary cache: its URL, public signing key and the "
       "nix.settings snippet a LAN NixOS machine needs to use it", tag="cache",
       response=ref("CacheInfo"))
def get_cache():
    return jsonify(cache_info(config()).to_dict())
