"""serve's status heartbeat: every HEARTBEAT_SECONDS `nixie serve` writes its
supervisor's health to the DB (settings key `serve.status`); web worker
processes, `nixie status` and the tests read it from there."""

from __future__ import annotations

import os
from typing import Any

from appliance.state import kv
from appliance.state.db import Store, now

HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS  # a heartbeat older than this: serve is not running


def write_status(store: Store, health: dict[str, Any], state: str = "running") -> None:
    kv.put(store.conn(), "serve.status", {"pid": os.getpid(), "ts": now(), "state": state, **health})


def read_status(conn) -> dict[str, Any] | None:
    """The last heartbeat (pid, ts, state, ok, services), or None before the first."""
    return kv.get(conn, "serve.status")


def running_status(conn, stale_seconds: float = STALE_SECONDS) -> dict[str, Any] | None:
    """The last heartbeat while serve runs (state running, fresher than
    `stale_seconds`), else None: serve stopped, died or never ran."""
    st = read_status(conn)
    if st and st.get("state") == "running" and now() - float(st.get("ts") or 0) < stale_seconds:
        return st
    return None
