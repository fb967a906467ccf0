"""Per-boot agent tokens and the host state machine the agent drives.

A token is issued when a boot script is rendered and is bound to that boot: the host,
the generation it boots, what the boot is (`netboot` or `install`) and the client
address that fetched the script. It is stored only as a SHA-256 hash. The agent
presents it as `Authorization: Bearer <token>` (or, from wget, as "token" in the body)
with each report.

What a LAN client who is not the host can do with the unauthenticated boot script:
- fetch it from its own address: when the router knows the host's addresses (a live
  DHCP or DHCPv6 lease of one of its MACs, its reservation, or over IPv6 the SLAAC
  address its MAC makes), no token is put in a script fetched from any other address,
  and the host's outstanding token is left alone;
- replay a token from another address: refused (403), the host's state unchanged;
- accumulate tokens: there is at most one per (host, generation), a new script for the
  same boot replaces it (an iPXE menu holds one per generation it lists);
- move a host backwards: a token moves only forward through its boot's reports
  (netboot: booted, then failed; install: installing..., then installed or failed), and a
  used token dies `used_ttl_seconds` after a report that ends the boot.
"""

from __future__ import annotations

import ipaddress
import secrets
import sqlite3
from dataclasses import dataclass

from appliance.domain import events, hosts
from appliance.domain.apitokens import hash_token
from appliance.state.db import now, transaction
from netservices.dhcp6.codec import mac_of_eui64

AGENT_EVENTS = ("booted", "installing", "installed", "failed")
PURPOSES = ("netboot", "install", "cached")
# which state each report moves a host to, from which host states it may come
TRANSITIONS = {
    "booted": {"unknown", "booting", "booted", "installed", "failed", "installing"},
    # from installed too: a reinstall (the admin set the host to install again)
    "installing": {"unknown", "booting", "booted", "installing", "installed", "failed"},
    "installed": {"installing", "booting", "booted", "installed"},
    "failed": set(hosts.STATES),
}
# one boot's reports: event -> the token's last reports it may follow (None: the first)
STEPS: dict[str, dict[str, set[str | None]]] = {
    "netboot": {"booted": {None}, "failed": {None, "booted"}},
    # cached netboot: the stage 1 may report failed (disk too small, router unreachable)
    "cached": {"booted": {None}, "failed": {None, "booted"}},
    "install": {"installing": {None, "installing"}, "installed": {"installing"},
                "failed": {None, "installing"}},
}
# reports that end a boot: afterwards the token lives only `used_ttl_seconds` (retries)
FINAL = {"booted", "installed", "failed"}


def host_addresses(conn: sqlite3.Connection, host_id: int) -> set[str]:
    """The addresses the router knows are the host's: live DHCP leases (offered or
    bound, unexpired) of its MACs, and its reservation."""
    t = now()
    out = {r[0] for r in conn.execute(
        "SELECT l.ip FROM leases l JOIN host_macs m ON m.mac = l.mac WHERE m.host_id = ? "
        "AND l.state IN ('offered', 'bound') AND l.expires > ?", (host_id, t))}
    out |= {r[0] for r in conn.execute(
        "SELECT address FROM leases6 WHERE host_id = ? AND state = 'bound' AND expires > ?",
        (host_id, t))}
    row = conn.execute("SELECT ip_reservation FROM hosts WHERE id = ?", (host_id,)).fetchone()
    if row is not None and row[0]:
        out.add(row[0])
    return out


def eui64_interface_id(mac: str) -> int:
    """The modified EUI-64 interface identifier of a MAC (RFC 4291 appendix A)."""
    b = bytearray(bytes.fromhex(mac.replace(":", "")))
    b[0] ^= 0x02
    return int.from_bytes(bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:]), "big")


def mac_of_slaac(ip: str) -> str | None:
    """The MAC an IPv6 address's modified EUI-64 interface identifier was made from
    (xx:xx:xx:ff:fe:xx:xx:xx, universal/local bit flipped back), or None when it has none."""
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return None
    mac = None if addr.ipv4_mapped is not None else mac_of_eui64(addr.packed)
    return mac.hex(":") if mac else None


def slaac_of_host(conn: sqlite3.Connection, host_id: int, ip: str) -> bool:
    """`ip` is an IPv6 address made from one of the host's MACs (SLAAC with an EUI-64
    interface identifier: what iPXE and Linux make from the RA's prefix by default)."""
    mac = mac_of_slaac(ip)
    return mac is not None and conn.execute(
        "SELECT 1 FROM host_macs WHERE host_id = ? AND mac = ?", (host_id, mac)).fetchone() \
        is not None


def issue_token(conn: sqlite3.Connection, host_id: int, generation_id: int | None, *,
                client_ip: str, purpose: str = "netboot", ttl_seconds: float = 3600,
                used_ttl_seconds: float = 120) -> str | None:
    """A token for the boot of `generation_id` that `client_ip` fetched a script for,
    replacing the host's outstanding one for that generation. None (and nothing
    replaced) when the router knows the host's addresses and `client_ip` is not one:
    whoever fetched the script is not the host."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    if not client_ip:
        return None
    token = secrets.token_urlsafe(24)
    t = now()
    with transaction(conn):
        known = host_addresses(conn, host_id)
        if known and client_ip not in known and not slaac_of_host(conn, host_id, client_ip):
            return None
        conn.execute("DELETE FROM boot_tokens WHERE host_id = ? AND generation_id IS ?",
                     (host_id, generation_id))
        conn.execute(
            "INSERT INTO boot_tokens (token_hash, host_id, generation_id, client_ip, purpose, "
            "created_at, expires_at, ttl_seconds, used_ttl_seconds) VALUES (?,?,?,?,?,?,?,?,?)",
            (hash_token(token), host_id, generation_id, client_ip, purpose, t, t + ttl_seconds,
             ttl_seconds, used_ttl_seconds))
    return token


@dataclass(frozen=True)
class TokenInfo:
    host_id: int
    host_name: str
    generation_id: int | None
    client_ip: str | None
    purpose: str
    last_event: str | None
    expires_at: float
    ttl_seconds: float
    used_ttl_seconds: float


def verify_token(conn: sqlite3.Connection, token: str) -> TokenInfo | None:
    """The live token's boot, or None (unknown, expired, or bound to no address)."""
    if not token or len(token) > 256:
        return None
    row = conn.execute(
        "SELECT t.host_id, t.generation_id, t.client_ip, t.purpose, t.last_event, t.expires_at, "
        "t.ttl_seconds, t.used_ttl_seconds, h.name FROM boot_tokens t "
        "JOIN hosts h ON h.id = t.host_id WHERE t.token_hash = ?", (hash_token(token),)).fetchone()
    if row is None or row["expires_at"] < now() or not row["client_ip"]:
        return None
    return TokenInfo(row["host_id"], row["name"], row["generation_id"], row["client_ip"],
                     row["purpose"], row["last_event"], row["expires_at"], row["ttl_seconds"],
                     row["used_ttl_seconds"])


def from_the_host(conn: sqlite3.Connection, info: TokenInfo, source_ip: str | None) -> bool:
    """A report may come from the address that fetched the script, or from one that holds a
    live lease (DHCP, DHCPv6) of the host's MACs (the booted system's own DHCP client may
    get another), or its SLAAC address (an IPv6 boot's system configures itself)."""
    if not source_ip:
        return False
    return (source_ip == info.client_ip or source_ip in host_addresses(conn, info.host_id)
            or slaac_of_host(conn, info.host_id, source_ip))


class AgentRejected(Exception):
    def __init__(self, status: int, message: str, host_id: int | None = None):
        super().__init__(message)
        self.status = status
        self.host_id = host_id


def report(conn: sqlite3.Connection, token: str, event: str, message: str, source_ip: str | None
           ) -> dict:
    """Handle one agent report. Raises AgentRejected(401|400|403|409); a refusal of the
    token or its use is an `agent.rejected` event and leaves the host as it was."""
    if event not in AGENT_EVENTS:
        raise AgentRejected(400, f"event must be one of {', '.join(AGENT_EVENTS)}")
    message = (message or "")[:2000]
    with transaction(conn):
        outcome = _apply(conn, token, event, message, source_ip)
    if isinstance(outcome, AgentRejected):
        events.record(conn, "agent.rejected", f"agent report refused: {outcome}",
                      level="warning", ip=source_ip, host_id=outcome.host_id)
        raise outcome
    return outcome


def _apply(conn: sqlite3.Connection, token: str, event: str, message: str,
           source_ip: str | None) -> dict | AgentRejected:
    """The report's effect inside the caller's transaction, or the refusal (nothing done)."""
    info = verify_token(conn, token)
    if info is None:
        return AgentRejected(401, "wrong or expired token")
    if not from_the_host(conn, info, source_ip):
        return AgentRejected(403, f"this token is not valid from {source_ip}", info.host_id)
    steps = STEPS[info.purpose]
    if event not in steps:
        return AgentRejected(409, f"a {info.purpose} boot does not report {event}", info.host_id)
    if event == info.last_event and event in FINAL:
        # a retry of a report whose answer was lost: accepted, nothing moves again
        return {"host": info.host_name, "state": event, "ip": source_ip, "repeated": True}
    if info.last_event not in steps[event]:
        return AgentRejected(409, f"this boot reported {info.last_event}; it cannot go back to "
                             f"{event}", info.host_id)
    state = conn.execute("SELECT state FROM hosts WHERE id = ?", (info.host_id,)).fetchone()[0]
    if state not in TRANSITIONS[event]:
        return AgentRejected(409, f"host is {state}; cannot become {event}", info.host_id)
    hosts.set_state(conn, info.host_id, event, ip=source_ip,
                    message=message or f"agent reports {event}")
    t = now()
    # an install step keeps it alive for the next one; a final report leaves retries only
    expires = (min(info.expires_at, t + info.used_ttl_seconds) if event in FINAL
               else t + info.ttl_seconds)
    conn.execute("UPDATE boot_tokens SET last_used = ?, last_event = ?, expires_at = ? "
                 "WHERE token_hash = ?", (t, event, expires, hash_token(token)))
    if event == "installed":
        # its next PXE boot goes to its disk
        conn.execute("UPDATE hosts SET mode = 'local' WHERE id = ? AND mode = 'install'",
                     (info.host_id,))
    return {"host": info.host_name, "state": event, "ip": source_ip}
