"""The `settings` table as a key-value store of JSON values: the one place that
reads and writes it (overrides of the config, confirmed network settings, the
serve heartbeat, the last apply)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


def get(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def put(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))


def delete(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM settings WHERE key = ?", (key,))


def with_prefix(conn: sqlite3.Connection, prefix: str) -> dict[str, Any]:
    """{key without the prefix: value} of every key that starts with `prefix`."""
    rows = conn.execute("SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?",
                        (len(prefix), prefix))
    return {r[0][len(prefix):]: json.loads(r[1]) for r in rows}
