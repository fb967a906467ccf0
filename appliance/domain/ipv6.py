"""The LAN's IPv6 prefix: `lan.address6`, or a ULA /64 generated once and kept.

RFC 4193: fd00::/8, a random 40-bit global ID, subnet 0; the router takes ::1.
It is generated at the first start that needs it and stored in the settings
table (key `lan.ula`), so it survives restarts and upgrades; the router
advertisements, DHCPv6 and (later) DNS, the firewall and HTTP boot all read it
through `lan_address6`.
"""

from __future__ import annotations

import ipaddress
import os
import sqlite3

from appliance.state import kv
from appliance.state.db import transaction

ULA_KEY = "lan.ula"
DUID_KEY = "dhcp6.server_duid"


def generate_ula(random: bytes | None = None) -> str:
    """fdXX:XXXX:XXXX::1/64 from 5 random bytes."""
    gid = random if random is not None else os.urandom(5)
    net = ipaddress.IPv6Network((b"\xfd" + gid + bytes(10), 64))
    return f"{net.network_address + 1}/64"


def lan_address6(conn: sqlite3.Connection, configured: str | None) -> str:
    """The router's LAN IPv6 address with prefix: the configured one, else the stored
    ULA (generated and stored on first use)."""
    if configured:
        return configured
    stored = kv.get(conn, ULA_KEY)
    if stored:
        return stored
    with transaction(conn):
        stored = kv.get(conn, ULA_KEY)  # another process may have just made it
        if not stored:
            stored = generate_ula()
            kv.put(conn, ULA_KEY, stored)
    return stored


def lan_prefix6(conn: sqlite3.Connection, configured: str | None) -> str | None:
    """The LAN's IPv6 prefix (e.g. fd00:1::/64) when there is one yet: the configured
    address's, else the stored ULA's; None before the first start made a ULA. What a
    host's IPv6 reservation is checked against."""
    address6 = configured or kv.get(conn, ULA_KEY)
    return str(ipaddress.IPv6Interface(address6).network) if address6 else None


def default_range6(address6: str) -> tuple[str, str]:
    """<prefix>::1:0 .. <prefix>::1:ffff."""
    base = int(ipaddress.IPv6Interface(address6).network.network_address)
    return str(ipaddress.IPv6Address(base + 0x10000)), str(ipaddress.IPv6Address(base + 0x1FFFF))


def server_duid6(conn: sqlite3.Connection) -> bytes:
    """The DHCPv6 server's DUID: a DUID-UUID (RFC 6355) made once and kept, so it
    stays the same when the LAN bridge's MAC changes."""
    stored = kv.get(conn, DUID_KEY)
    if not stored:
        with transaction(conn):
            stored = kv.get(conn, DUID_KEY)
            if not stored:
                stored = (b"\x00\x04" + os.urandom(16)).hex()
                kv.put(conn, DUID_KEY, stored)
    return bytes.fromhex(stored)
