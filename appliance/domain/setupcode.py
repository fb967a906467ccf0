"""The one-time setup code: what proves that whoever runs the setup wizard can
read the appliance's console or state dir, so the first browser to reach an
unconfigured router does not become its admin.

`nixie serve` issues it at start while setup is pending (`issue`): the code goes
to `state_dir/setup_code` (0600, written atomically) and, once, to the log; the
DB keeps only its SHA-256. The wizard's answer must match it (`check`), and
completing setup deletes it (`consume`, inside the setup transaction, then
`remove_file`). It is 12 characters from a 32-letter alphabet (60 bits),
grouped XXXX-XXXX-XXXX; case, spaces and dashes do not matter when typed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from pathlib import Path

from appliance.errors import InvalidInput
from appliance.state import kv, secretfile
from appliance.state.db import now

KV_KEY = "setup.code"
FILE_NAME = "setup_code"
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
LENGTH = 12


def code_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / FILE_NAME


def normalise(code: str) -> str:
    return "".join(c for c in code.upper() if c not in " -\t")


def _digest(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i:i + 4] for i in range(0, LENGTH, 4))


def outstanding(conn: sqlite3.Connection) -> bool:
    """A code has been issued and not used."""
    return kv.get(conn, KV_KEY) is not None


def issue(conn: sqlite3.Connection, state_dir: str | Path) -> str | None:
    """Make a new code unless the one in the state dir is still the outstanding
    one. Returns the new code (for the log, once), or None when the admin can
    still read the outstanding one from its file. The caller calls it only while
    setup is pending."""
    path = code_path(state_dir)
    stored = kv.get(conn, KV_KEY)
    try:
        on_file = path.read_text().strip()
    except FileNotFoundError:
        on_file = None
    if stored and on_file and hmac.compare_digest(_digest(on_file), stored["sha256"]):
        return None
    code = new_code()
    path.unlink(missing_ok=True)
    secretfile.write_new(path, (code + "\n").encode())
    kv.put(conn, KV_KEY, {"sha256": _digest(code), "at": now()})
    return code


def check(conn: sqlite3.Connection, code: str | None) -> None:
    """InvalidInput (field setup_code) unless `code` is the outstanding code."""
    stored = kv.get(conn, KV_KEY)
    if stored is None:
        raise InvalidInput("no setup code has been issued: restart nixie serve, then read the "
                           f"code from its log or from {FILE_NAME} in its state directory",
                           field="setup_code")
    if not isinstance(code, str) or not hmac.compare_digest(_digest(code), stored["sha256"]):
        raise InvalidInput("the setup code is wrong: read it from the log of nixie serve or from "
                           f"{FILE_NAME} in its state directory", field="setup_code")


def consume(conn: sqlite3.Connection) -> None:
    """Forget the code (inside the transaction that creates the first admin)."""
    kv.delete(conn, KV_KEY)


def remove_file(state_dir: str | Path) -> None:
    code_path(state_dir).unlink(missing_ok=True)
