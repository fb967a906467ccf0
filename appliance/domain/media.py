"""Boot media tokens (issue 20): the secret baked into a downloaded ISO, USB image or EFI
binary. The boot endpoint `/boot/m/<token>.ipxe` takes it instead of a MAC the router
knows: a per-host token names its host (a MAC behind NAT or unknown), a generic token lets
a machine beyond the LAN ask for the script of the MAC it presents. Only the SHA-256 of a
token is stored; the token itself is shown once, inside the media. Revoked tokens stay
listed and are refused (403) from then on.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from appliance.config.schema import url_problem
from appliance.domain import events, hosts
from appliance.domain.apitokens import hash_token
from appliance.errors import InvalidInput, NotFound
from appliance.state.db import now, transaction

FORMATS = ("iso", "usb", "efi", "script")
TOKEN_BYTES = 24  # 32 URL-safe characters: letters, digits, - and _
_COLUMNS = ("t.id, t.host_id, h.name AS host, t.label, t.base_url, t.format, t.created_at, "
            "t.last_used, t.last_ip, t.uses, t.revoked_at")


def validate_base_url(url: object, field: str = "base_url",
                      schemes: tuple[str, ...] = ("http", "https")) -> str:
    """An http(s) URL (of `schemes`) with a host and no query, fragment, spaces or
    characters iPXE or GRUB would interpret; no trailing slash (`config.schema.url_problem`)."""
    problem = url_problem(url, schemes)
    if problem is not None:
        raise InvalidInput(f"the boot URL {problem}", field=field)
    return str(url).strip().rstrip("/")


def create_token(conn: sqlite3.Connection, *, host: str | None, base_url: str, fmt: str,
                 label: str = "") -> tuple[dict[str, Any], str]:
    """A new media token for host `host` (a name) or generic media (None): (its row, the
    token — to be put in the media and never shown again)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    base_url = validate_base_url(base_url)
    label = (label or "").strip() if isinstance(label, str) else ""
    if len(label) > 64:
        raise InvalidInput("the label is at most 64 characters", field="label")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with transaction(conn):
        host_id = hosts.get_host(conn, host)["id"] if host is not None else None
        tid = conn.execute(
            "INSERT INTO media_tokens (token_hash, host_id, label, base_url, format, created_at) "
            "VALUES (?,?,?,?,?,?)", (hash_token(token), host_id, label, base_url, fmt, now())).lastrowid
        events.record(conn, "media.created",
                      f"boot media ({fmt}) for {host or 'any machine'} created",
                      host_id=host_id, data={"token_id": tid, "format": fmt, "url": base_url})
    return get_token(conn, tid), token


def get_token(conn: sqlite3.Connection, token_id: int) -> dict[str, Any]:
    row = conn.execute(f"SELECT {_COLUMNS} FROM media_tokens t LEFT JOIN hosts h "
                       "ON h.id = t.host_id WHERE t.id = ?", (token_id,)).fetchone()
    if row is None:
        raise NotFound(f"no media token {token_id}")
    return dict(row)


def list_tokens(conn: sqlite3.Connection, *, host: str | None = None, limit: int | None = None,
                before_id: int | None = None) -> list[dict[str, Any]]:
    """Media tokens, newest first: of one host, or all; `limit` rows with ids below
    `before_id` (a page)."""
    where, params = [], []
    if host is not None:
        where.append("t.host_id = ?")
        params.append(hosts.get_host(conn, host)["id"])
    if before_id is not None:
        where.append("t.id < ?")
        params.append(before_id)
    sql = (f"SELECT {_COLUMNS} FROM media_tokens t LEFT JOIN hosts h ON h.id = t.host_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY t.id DESC")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [dict(r) for r in conn.execute(sql, params)]


def revoke_token(conn: sqlite3.Connection, token_id: int) -> dict[str, Any]:
    with transaction(conn):
        tok = get_token(conn, token_id)
        if tok["revoked_at"] is None:
            conn.execute("UPDATE media_tokens SET revoked_at = ? WHERE id = ?", (now(), token_id))
            events.record(conn, "media.revoked",
                          f"boot media token {token_id} ({tok['host'] or 'generic'}) revoked",
                          host_id=tok["host_id"], data={"token_id": token_id})
    return get_token(conn, token_id)


def check_token(conn: sqlite3.Connection, token: str, ip: str | None = None
                ) -> dict[str, Any] | None:
    """The live token's row ({id, host_id, base_url, ...}) and its use counted, or None
    (unknown, malformed or revoked; the caller answers 403 either way)."""
    if not isinstance(token, str) or not 16 <= len(token) <= 64 \
            or not token.replace("-", "").replace("_", "").isalnum():
        return None
    row = conn.execute("SELECT id, host_id, base_url, revoked_at FROM media_tokens "
                       "WHERE token_hash = ?", (hash_token(token),)).fetchone()
    if row is None or row["revoked_at"] is not None:
        return None
    conn.execute("UPDATE media_tokens SET last_used = ?, last_ip = ?, uses = uses + 1 "
                 "WHERE id = ?", (now(), ip, row["id"]))
    return dict(row)


def delete_token(conn: sqlite3.Connection, token_id: int) -> None:
    """Forget a token whose media was never made (its build failed)."""
    with transaction(conn):
        conn.execute("DELETE FROM media_tokens WHERE id = ?", (token_id,))
