"""A host's SSH host key, pinned from its agent's first report of a boot.

The netbooted system (or the installer) sends its public host key
(`/etc/ssh/ssh_host_ed25519_key.pub`) with its reports. The first report of a boot that
comes with that boot's valid token (issued in the host's boot script, bound to its
address) pins the key in `hosts.ssh_host_key`, with the hash of the token that pinned it.
Whatever later speaks SSH to the host for the router (the push install,
`appliance/nix/install.py`) trusts that key and only that key (`StrictHostKeyChecking=yes`
against a known_hosts file holding it), never the first key a connection meets. Another
key later in the same boot does not replace it: it is a warning event
(`host.ssh_key_mismatch`). A new boot (a new token) pins its own key: a netbooted system
on a tmpfs root makes new host keys every boot, and its token is what vouches for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import sqlite3
import struct

from appliance.domain import events
from appliance.domain.apitokens import hash_token
from appliance.errors import InvalidInput

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "ssh-rsa")
MAX_KEY = 4096


def validate(text: str) -> str:
    """`type base64` of an OpenSSH public key line (the comment dropped); InvalidInput
    unless the blob decodes and names the same type."""
    parts = (text or "").strip().split()
    if len(text or "") > MAX_KEY or len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidInput(f"an SSH host key is '<type> <base64>' with type one of "
                           f"{', '.join(KEY_TYPES)}", field="ssh_host_key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + n].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError):
        inner = ""
    if inner != parts[0]:
        raise InvalidInput("the SSH host key's base64 is not a key of its type",
                           field="ssh_host_key")
    return f"{parts[0]} {parts[1]}"


def pin(conn: sqlite3.Connection, host_id: int, text: str, source_ip: str | None,
        token: str) -> str:
    """Pin `text` from a report accepted with the per-boot `token`: 'pinned' (the boot's
    first key), 'same', or 'mismatch' (another key within the same boot: a warning
    event, the pinned key stays); 'invalid' (an event) when it is not a key."""
    try:
        key = validate(text)
    except InvalidInput as e:
        events.record(conn, "agent.bad_ssh_key", str(e), level="warning", host_id=host_id,
                      ip=source_ip)
        return "invalid"
    boot = hash_token(token)
    row = conn.execute("SELECT ssh_host_key, ssh_host_key_boot FROM hosts WHERE id = ?",
                       (host_id,)).fetchone()
    if row is None:
        return "invalid"
    if row[0] == key:
        return "same"
    if row[0] and row[1] == boot:
        events.record(conn, "host.ssh_key_mismatch",
                      f"the agent sent the host key {_short(key)}, not the one this boot "
                      f"pinned ({_short(row[0])}); the pinned key stays", level="warning",
                      host_id=host_id, ip=source_ip)
        return "mismatch"
    conn.execute("UPDATE hosts SET ssh_host_key = ?, ssh_host_key_boot = ? WHERE id = ?",
                 (key, boot, host_id))
    events.record(conn, "host.ssh_key_pinned", f"SSH host key pinned: {_short(key)}",
                  host_id=host_id, ip=source_ip)
    return "pinned"


def _short(key: str) -> str:
    """A key as events show it: its type and SHA-256 fingerprint (as ssh-keygen -l)."""
    kind, blob = key.split()[:2]
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).decode()
    return f"{kind} SHA256:{digest.rstrip('=')}"


def pinned(conn: sqlite3.Connection, host_id: int) -> str | None:
    row = conn.execute("SELECT ssh_host_key FROM hosts WHERE id = ?", (host_id,)).fetchone()
    return row[0] if row else None


def known_hosts_line(address: str, key: str) -> str:
    """One known_hosts line: the address and the key (validated; ssh's port 22)."""
    return f"{address} {validate(key)}\n"
