"""serve's status heartbeat: every HEARTBEAT_SECONDS `nixie serve` writes its
supervisor's health to the DB (settings key `serve.status`); web worker
processes, `nixie status` and the tests read it from there."""

from __future__ import annotations

import json
import os
from typing import Any

from appliance.state.db import Store, now

HEARTBEAT_SECONDS = 2.0


def write_status(store: Store, health: dict[str, Any], state: str = "running") -> None:
    value = json.dumps({"pid": os.getpid(), "ts": now(), "state": state, **health})
    store.conn().execute(
        "INSERT INTO settings (key, value) VALUES ('serve.status', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (value,))


def read_status(conn) -> dict[str, Any] | None:
    """The last heartbeat (pid, ts, state, ok, services), or None before the first."""
    row = conn.execute("SELECT value FROM settings WHERE key = 'serve.status'").fetchone()
    return json.loads(row[0]) if row else None
