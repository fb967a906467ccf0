"""Installed hosts: the disk token, and how a host last came up (`hosts.boot_mode`).

A host that boots from its own disk gets no boot script with a token in it, so the
installer asks for a credential to keep on the disk: the answer to its `installed`
report carries `local_token`, which it writes to `/nix/.nixie/agent-token` (0600) on
the installed root filesystem. The system booted from the disk presents it to report
`booted` (its boot mode `local`) or `failed`, once per boot, for as long as that
install stands. There is one per host, stored only as a SHA-256 hash; a new install
replaces it, removing the host removes it. Like a boot token it is accepted only from
an address the router knows is the host's (a live DHCP lease of one of its MACs, or its
reservation); where the router knows none (proxy DHCP, as in stateless mode: another
server leases), only from the address the installer reported `installed` from.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass

from appliance.domain import events, hosts
from appliance.domain.agent import AgentRejected, host_addresses
from appliance.domain.apitokens import hash_token
from appliance.state.db import now, transaction

BOOT_MODES = ("netboot", "install", "local", "cached")
DISK_EVENTS = ("booted", "failed")
# an agent report through a per-boot token -> how the host came up
BOOT_MODE_OF_REPORT = {"booted": "netboot", "installing": "install", "installed": "install"}


def boot_mode_of(purpose: str, event: str) -> str:
    """How a host came up, from a per-boot token's report: a cached netboot's `booted`
    is boot mode `cached` (its system runs from its disk's store)."""
    if purpose == "cached" and event == "booted":
        return "cached"
    return BOOT_MODE_OF_REPORT[event]


def set_boot_mode(conn: sqlite3.Connection, host_id: int, mode: str) -> None:
    if mode not in BOOT_MODES:
        raise ValueError(f"boot mode must be one of {BOOT_MODES}")
    conn.execute("UPDATE hosts SET boot_mode = ? WHERE id = ?", (mode, host_id))


def issue_disk_token(conn: sqlite3.Connection, host_id: int, generation_id: int | None,
                     bound_ip: str | None = None) -> str:
    """The installed system's credential, replacing the host's previous one.
    `bound_ip`: the installer's address, the only one it is accepted from while the
    router knows no address of the host."""
    token = secrets.token_urlsafe(32)
    row = conn.execute("SELECT toplevel FROM generations WHERE id = ?",
                       (generation_id,)).fetchone() if generation_id is not None else None
    with transaction(conn):
        conn.execute("DELETE FROM disk_tokens WHERE host_id = ?", (host_id,))
        conn.execute("INSERT INTO disk_tokens (host_id, token_hash, generation_id, toplevel, "
                     "created_at, bound_ip) VALUES (?,?,?,?,?,?)",
                     (host_id, hash_token(token), generation_id, row[0] if row else None, now(),
                      bound_ip))
    return token


@dataclass(frozen=True)
class DiskToken:
    host_id: int
    host_name: str
    generation_id: int | None
    toplevel: str | None
    bound_ip: str | None = None


def verify_disk_token(conn: sqlite3.Connection, token: str) -> DiskToken | None:
    if not token or len(token) > 256:
        return None
    row = conn.execute(
        "SELECT d.host_id, d.generation_id, d.toplevel, d.bound_ip, h.name FROM disk_tokens d "
        "JOIN hosts h ON h.id = d.host_id WHERE d.token_hash = ?", (hash_token(token),)).fetchone()
    return DiskToken(row["host_id"], row["name"], row["generation_id"],
                     row["toplevel"], row["bound_ip"]) if row else None


def allowed_addresses(conn: sqlite3.Connection, info: DiskToken) -> set[str]:
    """Where a disk token is accepted from: the host's known addresses, else the
    installer's."""
    return host_addresses(conn, info.host_id) or ({info.bound_ip} if info.bound_ip else set())


def report(conn: sqlite3.Connection, info: DiskToken, event: str, message: str,
           source_ip: str | None) -> dict:
    """One report of a system booted from its disk. Raises AgentRejected(400|403)."""
    if event not in DISK_EVENTS:
        raise AgentRejected(400, f"a system booted from its disk reports {' or '.join(DISK_EVENTS)}")
    message = (message or "")[:2000]
    if not source_ip or source_ip not in allowed_addresses(conn, info):
        events.record(conn, "agent.rejected",
                      f"disk token of {info.host_name} used from {source_ip}, not one of "
                      "its addresses", level="warning", ip=source_ip, host_id=info.host_id)
        raise AgentRejected(403, f"this token is not valid from {source_ip}")
    with transaction(conn):
        hosts.set_state(conn, info.host_id, event, ip=source_ip,
                        message=message or f"agent reports {event} from its disk")
        set_boot_mode(conn, info.host_id, "local")
        conn.execute("UPDATE disk_tokens SET last_used = ? WHERE host_id = ?",
                     (now(), info.host_id))
        events.record(conn, "boot.local", f"{info.host_name} booted from its disk",
                      host_id=info.host_id, ip=source_ip,
                      data={"boot_mode": "local", "event": event, "toplevel": info.toplevel})
    return {"host": info.host_name, "state": event, "ip": source_ip, "boot_mode": "local"}
