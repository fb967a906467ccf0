"""Reading the request: the JSON body and query arguments, with InvalidInput
(400, naming the field) for anything of the wrong type or out of range."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from flask import request

from appliance.errors import InvalidInput

from .schemas import MAX_LIMIT

TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list of strings"}


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    return data


def want(data: dict, key: str, kind: type, required: bool = False, nullable: bool = False):
    """data[key] if it is of `kind` (list: a list of strings); None when absent."""
    if key not in data:
        if required:
            raise InvalidInput(f"{key} is required", field=key)
        return None
    v = data[key]
    if v is None and nullable:
        return None
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is list:
        ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
    if not ok:
        raise InvalidInput(f"{key} must be {TYPE_NAMES.get(kind, kind.__name__)}", field=key)
    return v


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", field=name) from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{name} must be within {lo}..{hi}", field=name)
    return v


def str_arg(name: str, max_len: int = 256) -> str | None:
    v = request.args.get(name)
    if v is None or v == "":
        return None
    if len(v) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len}", field=name)
    return v


def bool_arg(name: str) -> bool:
    v = (request.args.get(name) or "").lower()
    if v in ("", "0", "false", "no"):
        return False
    if v in ("1", "true", "yes"):
        return True
    raise InvalidInput(f"{name} must be true or false", field=name)


# ------------------------------------------------------------------ pagination
# One style for every paged list: `?limit=N&cursor=C`, answered with
# `{"items": [...], "next_cursor": C | null, "limit": N}`. The cursor is opaque to clients;
# inside it is "<kind>:<n>", an offset ("o") or the last id seen ("id", newest first).


def encode_cursor(kind: str, n: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{n}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, legacy: str | None = None) -> int | None:
    """The position in ?cursor= (made for `kind`), else the legacy parameter's integer
    (`offset`, `before`), else None."""
    raw = str_arg("cursor", 64)
    if raw is None:
        return int_arg(legacy, 0, 0, 2**62) or None if legacy else None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        got, n = text.split(":")
        if got != kind or not n.isdigit() or int(n) > 2**62:  # SQLite integers are 64-bit
            raise ValueError
        return int(n)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidInput("cursor is not one this list gave out", field="cursor") from None


def page(items: list[dict[str, Any]], limit: int, kind: str, position: int | None,
         **extra: Any) -> dict[str, Any]:
    """The page body from `items` fetched with limit + 1 (the extra row says there is
    a next page)."""
    more = len(items) > limit
    items = items[:limit]
    nxt = None
    if more and items:
        nxt = encode_cursor(kind, (position or 0) + limit if kind == "o" else items[-1]["id"])
    return {"items": items, "next_cursor": nxt, "limit": limit, **extra}


def id_page(fetch: Callable[..., list[dict[str, Any]]], default_limit: int,
            max_limit: int = MAX_LIMIT, legacy: str | None = None) -> dict[str, Any]:
    """A list newest first, paged by the last id seen: ?limit= and ?cursor= (or the
    `legacy` parameter) read, `fetch(limit=, before_id=)` asked for one row more than
    the page."""
    limit, before = int_arg("limit", default_limit, 1, max_limit), decode_cursor("id", legacy)
    return page(fetch(limit=limit + 1, before_id=before), limit, "id", before)


def offset_page(fetch: Callable[..., list[dict[str, Any]]], count: Callable[[], int],
                default_limit: int, max_limit: int = MAX_LIMIT) -> dict[str, Any]:
    """A list paged by offset, with its `total`: ?limit= and ?cursor= (or ?offset=) read,
    `fetch(limit=, offset=)` asked for one row more than the page."""
    limit, offset = int_arg("limit", default_limit, 1, max_limit), decode_cursor("o", "offset") or 0
    return page(fetch(limit=limit + 1, offset=offset), limit, "o", offset, total=count(),
                offset=offset)
