"""Failed-login limits, kept in the state DB so every web worker process (and a
restarted one) counts the same failures.

Two counts, neither of which one address can use against someone else:

- per (user name, address): the first `free` failures cost nothing; after that
  each failure makes that name wait from that address `base_delay` seconds,
  doubling with every further failure up to `max_delay`. Failures older than
  `seconds` are forgotten; a success from the address clears the pair.
- per address: at most `per_ip` failures (any names) within `ip_seconds`, so one
  address cannot spray many names.

There is no count per user name alone: wrong passwords for `admin` sent from one
address slow down that address, never the admin logging in from another.

"Address" is `netservices.listen.client_group`'s: an IPv4 address, or an IPv6 /64 (a
host picks any address of its /64 at will, so counting per IPv6 address would give
each try a fresh count).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.state.db import now, transaction
from netservices.listen import client_group


@dataclass(frozen=True)
class LoginLimits:
    free: int = 3
    base_delay: float = 1.0
    max_delay: float = 300.0
    seconds: float = 900.0
    per_ip: int = 20
    ip_seconds: float = 300.0

    @staticmethod
    def _pair(ip: str, username: str) -> str:
        return f"{username.lower()}\n{ip}"

    def delay_after(self, failures: int) -> float:
        """Seconds a (name, address) pair waits after its `failures`-th failure."""
        if failures < self.free:
            return 0.0
        return min(self.max_delay, self.base_delay * 2.0 ** min(failures - self.free, 60))

    def _pair_wait(self, conn: sqlite3.Connection, ip: str, username: str, t: float) -> float:
        n, last = conn.execute(
            "SELECT count(*), max(ts) FROM login_failures WHERE scope = 'pair' AND key = ? "
            "AND ts > ?", (self._pair(ip, username), t - self.seconds)).fetchone()
        if not n:
            return 0.0
        return max(0.0, last + self.delay_after(n) - t)

    def _ip_wait(self, conn: sqlite3.Connection, ip: str, t: float) -> float:
        n, first = conn.execute(
            "SELECT count(*), min(ts) FROM (SELECT ts FROM login_failures WHERE scope = 'ip' "
            "AND key = ? AND ts > ? ORDER BY ts DESC LIMIT ?)",
            (ip, t - self.ip_seconds, self.per_ip)).fetchone()
        if n < self.per_ip:
            return 0.0
        return max(0.0, first + self.ip_seconds - t)

    def retry_after(self, conn: sqlite3.Connection, ip: str, username: str) -> float:
        """Seconds until this address may try this user name again; 0 when it may now."""
        ip = client_group(ip)
        t = now()
        return max(self._pair_wait(conn, ip, username, t), self._ip_wait(conn, ip, t))

    def failed(self, conn: sqlite3.Connection, ip: str, username: str) -> float:
        """Count a failure; returns the seconds the pair must now wait."""
        ip = client_group(ip)
        t = now()
        with transaction(conn):
            conn.executemany("INSERT INTO login_failures (scope, key, ts) VALUES (?, ?, ?)",
                             [("ip", ip, t), ("pair", self._pair(ip, username), t)])
            conn.execute("DELETE FROM login_failures WHERE ts <= ?",
                         (t - max(self.seconds, self.ip_seconds),))
        return self.retry_after(conn, ip, username)

    def succeeded(self, conn: sqlite3.Connection, ip: str, username: str) -> None:
        ip = client_group(ip)
        conn.execute("DELETE FROM login_failures WHERE scope = 'pair' AND key = ?",
                     (self._pair(ip, username),))
