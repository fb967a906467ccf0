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
from typing import Any

from appliance.domain import settings


@dataclass(frozen=True)
class ApplyReport:
    outcome: settings.Outcome
    message: str
    status: dict[str, Any] | None  # what serve recorded for this change, or None

    @property
    def category(self) -> str:
        """The flash category the UI shows the message with."""
        return {"failed": "error", "pending": "warn", "saved": "info"}.get(self.outcome, "ok")


def after_save(conn: sqlite3.Connection, since: float) -> ApplyReport:
    """The outcome of a save made at `since` (`now()` just before saving), in words."""
    outcome, st = settings.apply_outcome(conn, since)
    if outcome == "unchanged":
        message = "Settings saved; nothing changed."
    elif outcome == "saved":
        message = "Saved; applies when nixie serve starts."
    elif outcome == "pending":
        message = "Saved; nixie serve has not applied it yet (its outcome will be in Events)."
    elif outcome == "failed":
        message = f"Saved, but not applied: {st.get('error')}. The previous value keeps running."
    else:
        services = ", ".join(st.get("services") or []) or "none needed a change"
        message = f"Saved and applied to the running services: {services}."
    return ApplyReport(outcome, message, st)
