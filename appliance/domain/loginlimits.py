"""Failed-login limits, kept in the state DB so every web worker process (and a
restarted one) counts the same failures: at most `per_ip` failures per address
and `per_user` per user name within `seconds`; a success clears the name's count."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.state.db import now, transaction


@dataclass(frozen=True)
class LoginLimits:
    per_ip: int = 20
    per_user: int = 5
    seconds: float = 300.0

    def _wait(self, conn: sqlite3.Connection, scope: str, key: str, limit: int, t: float) -> float:
        row = conn.execute(
            "SELECT count(*), min(ts) FROM (SELECT ts FROM login_failures WHERE scope = ? AND key = ? "
            "AND ts > ? ORDER BY ts DESC LIMIT ?)", (scope, key, t - self.seconds, limit)).fetchone()
        if row[0] < limit:
            return 0.0
        return max(0.0, row[1] + self.seconds - t)

    def retry_after(self, conn: sqlite3.Connection, ip: str, username: str) -> float:
        """Seconds until this address and user name may try again; 0 when they may now."""
        t = now()
        return max(self._wait(conn, "ip", ip, self.per_ip, t),
                   self._wait(conn, "user", username.lower(), self.per_user, t))

    def failed(self, conn: sqlite3.Connection, ip: str, username: str) -> None:
        t = now()
        with transaction(conn):
            conn.executemany("INSERT INTO login_failures (scope, key, ts) VALUES (?, ?, ?)",
                             [("ip", ip, t), ("user", username.lower(), t)])
            conn.execute("DELETE FROM login_failures WHERE ts <= ?", (t - self.seconds,))

    def succeeded(self, conn: sqlite3.Connection, username: str) -> None:
        conn.execute("DELETE FROM login_failures WHERE scope = 'user' AND key = ?", (username.lower(),))
