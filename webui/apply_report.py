"""What became of a saved settings change, for the Settings page, the setup
wizard and `PATCH /api/v1/settings`.

A running `nixie serve` applies a stored change within 2 s and records the
outcome (`appliance.domain.settings.apply_status`); a save waits up to
`settings.wait_applied`'s 2.5 s for it. When serve's heartbeat is stale (it is
not running) nothing waits: the change applies when serve starts.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from appliance.domain import settings

Outcome = Literal["unchanged", "applied", "failed", "pending", "serve_stopped"]


@dataclass(frozen=True)
class ApplyReport:
    outcome: Outcome
    message: str
    status: dict[str, Any] | None  # what serve recorded for this change, or None

    @property
    def category(self) -> str:
        """The flash category the UI shows the message with."""
        return {"failed": "error", "pending": "warn", "serve_stopped": "info"}.get(
            self.outcome, "ok")


def after_save(conn: sqlite3.Connection, since: float) -> ApplyReport:
    """The outcome of a save made at `since` (`now()` just before saving)."""
    if (settings.last_change(conn) or {}).get("at", 0) < since:
        return ApplyReport("unchanged", "Settings saved; nothing changed.", None)
    if not settings.serve_running(conn):
        return ApplyReport("serve_stopped", "Saved; applies when nixie serve starts.", None)
    st = settings.wait_applied(conn, since)
    if st is None:
        return ApplyReport("pending", "Saved; nixie serve has not applied it yet "
                                      "(its outcome will be in Events).", None)
    if not st.get("ok"):
        return ApplyReport("failed", f"Saved, but not applied: {st.get('error')}. "
                                     "The previous value keeps running.", st)
    services = ", ".join(st.get("services") or []) or "none needed a change"
    return ApplyReport("applied", f"Saved and applied to the running services: {services}.", st)
