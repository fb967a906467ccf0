"""Per-boot agent tokens and the host state machine the agent drives.

A token is issued when a boot script is rendered, bound to the host and the
generation it boots, and stored only as a SHA-256 hash. The agent presents it
as `Authorization: Bearer <token>` with each report.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from appliance.domain import events, hosts
from appliance.state.db import now, transaction

AGENT_EVENTS = ("booted", "installing", "installed", "failed")
# which state each report moves a host to, from which states it may come
TRANSITIONS = {
    "booted": {"unknown", "booting", "booted", "installed", "failed", "installing"},
    "installing": {"unknown", "booting", "booted", "installing", "failed"},
    "installed": {"installing", "booting", "booted", "installed"},
    "failed": set(hosts.STATES),
}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(conn: sqlite3.Connection, host_id: int, generation_id: int | None,
                ttl_seconds: int) -> str:
    token = secrets.token_urlsafe(24)
    t = now()
    conn.execute("INSERT INTO boot_tokens (token_hash, host_id, generation_id, created_at, expires_at) "
                 "VALUES (?,?,?,?,?)", (_hash(token), host_id, generation_id, t, t + ttl_seconds))
    return token


@dataclass(frozen=True)
class TokenInfo:
    host_id: int
    host_name: str
    generation_id: int | None


def verify_token(conn: sqlite3.Connection, token: str) -> TokenInfo | None:
    if not token or len(token) > 256:
        return None
    row = conn.execute(
        "SELECT t.host_id, t.generation_id, t.expires_at, h.name FROM boot_tokens t "
        "JOIN hosts h ON h.id = t.host_id WHERE t.token_hash = ?", (_hash(token),)).fetchone()
    if row is None or row["expires_at"] < now():
        return None
    return TokenInfo(row["host_id"], row["name"], row["generation_id"])


class AgentRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def report(conn: sqlite3.Connection, token: str, event: str, message: str, source_ip: str | None
           ) -> dict:
    """Handle one agent report. Raises AgentRejected(401|400|409)."""
    info = verify_token(conn, token)
    if info is None:
        events.record(conn, "agent.rejected", "agent report with a wrong or expired token",
                      level="warning", ip=source_ip)
        raise AgentRejected(401, "wrong or expired token")
    if event not in AGENT_EVENTS:
        raise AgentRejected(400, f"event must be one of {', '.join(AGENT_EVENTS)}")
    message = (message or "")[:2000]
    with transaction(conn):
        state = conn.execute("SELECT state FROM hosts WHERE id = ?", (info.host_id,)).fetchone()[0]
        if state not in TRANSITIONS[event]:
            raise AgentRejected(409, f"host is {state}; cannot become {event}")
        hosts.set_state(conn, info.host_id, event, ip=source_ip,
                        message=message or f"agent reports {event}")
        conn.execute("UPDATE boot_tokens SET last_used = ? WHERE token_hash = ?", (now(), _hash(token)))
        if event == "installed":
            # its next PXE boot goes to its disk
            conn.execute("UPDATE hosts SET mode = 'local' WHERE id = ? AND mode = 'install'",
                         (info.host_id,))
    return {"host": info.host_name, "state": event, "ip": source_ip}
