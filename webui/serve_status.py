"""Whether `nixie serve` runs on this state, from its heartbeat in the DB (the web
UI may run in serve's process or in a web worker process of its own)."""

from __future__ import annotations

import sqlite3

from appliance.state.db import now
from appliance.state.status import HEARTBEAT_SECONDS, read_status

# a heartbeat older than this means serve is not running
SERVE_STALE_SECONDS = 3 * HEARTBEAT_SECONDS


def serve_running(conn: sqlite3.Connection) -> bool:
    st = read_status(conn)
    return bool(st and st.get("state") == "running"
                and now() - float(st.get("ts") or 0) < SERVE_STALE_SECONDS)
