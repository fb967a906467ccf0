"""REST API tokens: created and revoked by an admin, stored only as SHA-256 hashes.

The secret is shown once, at creation. A request presents it as
`Authorization: Bearer nxt_...`.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from typing import Any

from appliance.domain import events
from appliance.errors import InvalidInput, NotFound
from appliance.state.db import now, transaction

PREFIX = "nxt_"


def hash_token(token: str) -> str:
    """How every token the router hands out is stored: the SHA-256 hex of the token (API,
    boot, disk and media tokens)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: sqlite3.Connection, user_id: int, name: str) -> tuple[dict[str, Any], str]:
    """A new token for `user_id`: (its row, the secret — shown once)."""
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name or len(name) > 64:
        raise InvalidInput("a token needs a name of 1 to 64 characters", field="name")
    secret = PREFIX + secrets.token_urlsafe(32)
    with transaction(conn):
        tid = conn.execute("INSERT INTO api_tokens (user_id, name, token_hash, created_at) "
                           "VALUES (?,?,?,?)", (user_id, name, hash_token(secret), now())).lastrowid
        events.record(conn, "token.created", f"API token {name!r} created")
    return get_token(conn, tid), secret


def get_token(conn: sqlite3.Connection, token_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT t.id, t.name, t.created_at, t.last_used, t.revoked_at, u.username AS user "
        "FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?", (token_id,)).fetchone()
    if row is None:
        raise NotFound(f"no API token {token_id}")
    return dict(row)


def list_tokens(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT t.id, t.name, t.created_at, t.last_used, t.revoked_at, u.username AS user "
        "FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id DESC")]


def revoke_token(conn: sqlite3.Connection, token_id: int) -> dict[str, Any]:
    with transaction(conn):
        tok = get_token(conn, token_id)
        if tok["revoked_at"] is None:
            conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (now(), token_id))
            events.record(conn, "token.revoked", f"API token {tok['name']!r} revoked")
    return get_token(conn, token_id)


def verify_token(conn: sqlite3.Connection, secret: str) -> dict[str, Any] | None:
    """The token's user ({id, username, token_id}) if the secret is live, else None."""
    if not isinstance(secret, str) or not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    row = conn.execute(
        "SELECT t.id AS token_id, t.revoked_at, u.id, u.username FROM api_tokens t "
        "JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?", (hash_token(secret),)).fetchone()
    if row is None or row["revoked_at"] is not None:
        return None
    t = now()
    conn.execute("UPDATE api_tokens SET last_used = ? WHERE id = ? AND (last_used IS NULL OR last_used < ?)",
                 (t, row["token_id"], t - 60))
    return {"id": row["id"], "username": row["username"], "token_id": row["token_id"]}
