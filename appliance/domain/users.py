"""Admin users: argon2id password hashes, password changes, adding and removing admins.

A browser session carries the user's *session stamp* (`session_stamp`), derived from the
stored password hash: a password change makes a new hash, so every other session of that
user ends at its next request, while the one that made the change is given the new stamp.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sqlite3

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.domain import events
from appliance.errors import Conflict, InvalidInput, NotFound
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


def session_stamp(password_hash: str) -> str:
    """What a session keeps of the password it was opened under (not the hash itself)."""
    return hashlib.sha256(b"nixie-session\0" + password_hash.encode()).hexdigest()[:32]


def stamp_of(conn: sqlite3.Connection, user_id: int) -> str | None:
    row = conn.execute("SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()
    return session_stamp(row["password_hash"]) if row else None


def session_user(conn: sqlite3.Connection, user_id: int, stamp: object) -> dict | None:
    """The user a session names, if the session was opened under the current password."""
    row = conn.execute("SELECT id, username, role, created_at, last_login, password_hash "
                       "FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None or not isinstance(stamp, str) or stamp != session_stamp(row["password_hash"]):
        return None
    user = dict(row)
    del user["password_hash"]
    return user


def check_password(password: object, field: str = "password") -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password needs at least {MIN_PASSWORD} characters", field=field)
    if len(password) > 1024:
        raise InvalidInput("the password is longer than 1024 characters", field=field)
    return password


def change_password(conn: sqlite3.Connection, user_id: int, current: str, new: str) -> str:
    """Set a new password when `current` is right; returns the new session stamp (every
    session opened under the old password ends)."""
    row = conn.execute("SELECT username, password_hash FROM users WHERE id = ?",
                       (user_id,)).fetchone()
    if row is None:
        raise NotFound(f"no user with id {user_id}")
    try:
        _hasher.verify(row["password_hash"], current if isinstance(current, str) else "")
    except (VerificationError, InvalidHashError):
        raise InvalidInput("the current password is wrong", field="current_password") from None
    check_password(new, "new_password")
    if new == current:
        raise InvalidInput("the new password is the current one", field="new_password")
    pw_hash = hash_password(new)
    with transaction(conn):
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (pw_hash, user_id))
        events.record(conn, "user.password_changed",
                      f"user {row['username']} changed their password")
    return session_stamp(pw_hash)


def set_password(conn: sqlite3.Connection, username: str, new: str) -> None:
    """Reset a user's password without the current one (the CLI on the router, as root);
    every session of theirs ends."""
    check_password(new)
    pw_hash = hash_password(new)
    with transaction(conn):
        user = get_user_by_name(conn, username)
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (pw_hash, user["id"]))
        events.record(conn, "user.password_reset", f"password of {username} reset on the router")


def list_users(conn: sqlite3.Connection) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT id, username, role, created_at, last_login FROM users ORDER BY username")]


def get_user_by_name(conn: sqlite3.Connection, username: str) -> dict:
    row = conn.execute("SELECT id, username, role, created_at, last_login FROM users "
                       "WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise NotFound(f"no user named {username!r}")
    return dict(row)


def remove_user(conn: sqlite3.Connection, username: str, *, acting_user_id: int | None) -> None:
    """Remove an admin (their API tokens go with them). Refused for the acting user
    themselves and for the last admin."""
    with transaction(conn):
        user = get_user_by_name(conn, username)
        if acting_user_id is not None and user["id"] == acting_user_id:
            raise Conflict("you cannot remove yourself; another admin can")
        admins = conn.execute("SELECT count(*) FROM users WHERE role = 'admin'").fetchone()[0]
        if user["role"] == "admin" and admins <= 1:
            raise Conflict(f"{username} is the last admin")
        conn.execute("DELETE FROM users WHERE id = ?", (user["id"],))
        events.record(conn, "user.removed", f"user {username} removed")
