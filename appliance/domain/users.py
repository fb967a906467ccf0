"""Admin users: argon2id password hashes."""

from __future__ import annotations

import functools
import re
import sqlite3

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.domain import events
from appliance.errors import Conflict, InvalidInput
from appliance.state.db import now, transaction

_hasher = PasswordHasher()
_USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
MIN_PASSWORD = 8


def check_new_user(username: str, password: str) -> None:
    """InvalidInput (with the field) unless the name and password are acceptable."""
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise InvalidInput(f"{username!r} is not a valid user name (lower-case letters, digits, "
                           "'_', '.', '-'; at most 32)", field="username")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password needs at least {MIN_PASSWORD} characters", field="password")


def create_user(conn: sqlite3.Connection, username: str, password: str) -> int:
    check_new_user(username, password)
    pw_hash = hash_password(password)
    with transaction(conn):
        return insert_user(conn, username, pw_hash)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def insert_user(conn: sqlite3.Connection, username: str, pw_hash: str) -> int:
    """Add a checked user inside the caller's transaction."""
    if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
        raise Conflict(f"user {username} already exists")
    uid = conn.execute("INSERT INTO users (username, password_hash, created_at) VALUES (?,?,?)",
                       (username, pw_hash, now())).lastrowid
    events.record(conn, "user.created", f"user {username} created")
    return uid


def verify_password(conn: sqlite3.Connection, username: str, password: str) -> int | None:
    """The user's id if the password is right, else None (constant work either way)."""
    row = conn.execute("SELECT id, password_hash FROM users WHERE username = ?", (username,)).fetchone()
    target = row["password_hash"] if row else _dummy_hash()
    try:
        _hasher.verify(target, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(target):
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"]))
    conn.execute("UPDATE users SET last_login = ? WHERE id = ?", (now(), row["id"]))
    return row["id"]


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not-a-real-password-used-for-timing")


def count_users(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM users").fetchone()[0]





def get_user(conn: sqlite3.Connection, user_id: int) -> dict | None:
    row = conn.execute("SELECT id, username, role, created_at, last_login FROM users WHERE id = ?",
                       (user_id,)).fetchone()
    return dict(row) if row else None
