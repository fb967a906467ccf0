"""A host's BMC (baseboard management controller): how to reach it, and its last power state.

The record is in the `host_bmc` table (migration 24); the password never is. It is a file of
its own, mode 0600 in a 0700 directory next to the database (`state_dir/bmc-secrets/`),
named by a random reference the row holds, so no listing, export, event or log line carries
it and a removed host's reference is never reused. `credentials()` is the one reader; the
drivers (appliance/router/bmc) get it from there.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.domain import events
from appliance.errors import InvalidInput, NotFound
from appliance.state.db import now, transaction

KINDS = ("ipmi", "redfish")
POWER_STATES = ("on", "off", "unknown")
SECRETS_DIR = "bmc-secrets"
DEFAULT_PORTS = {"ipmi": 623, "redfish": 443}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_USERNAME = re.compile(r"^[^\s:\x00-\x1f]{1,64}$")
_SYSTEM_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
MAX_PASSWORD = 128


@dataclass(frozen=True)
class Bmc:
    """A host's BMC as everyone may see it: no password."""

    host_id: int
    host: str
    kind: str
    address: str
    port: int
    username: str
    verify_tls: bool
    system_id: str | None
    power_state: str | None
    power_checked_at: float | None
    last_error: str | None

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        del d["host_id"]
        return d


@dataclass(frozen=True)
class Credentials:
    """What a driver needs to talk to one BMC. The password stays out of repr()."""

    bmc: Bmc
    password: str = field(repr=False)


def validate_kind(kind: object) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"BMC kind must be one of {', '.join(KINDS)}, got {kind!r}",
                           field="kind")
    return kind  # type: ignore[return-value]


def validate_address(address: object) -> str:
    """An IP address or a DNS name: no scheme, path or port (the port is its own field)."""
    if not isinstance(address, str) or not address.strip():
        raise InvalidInput("a BMC address is required", field="address")
    a = address.strip()
    try:
        return str(ipaddress.ip_address(a))
    except ValueError:
        pass
    if not _HOSTNAME.match(a):
        raise InvalidInput(f"{a!r} is not an IP address or host name (give the port on its own)",
                           field="address")
    return a.lower()


def validate_port(port: object, kind: str) -> int:
    if port is None or port == "":
        return DEFAULT_PORTS[kind]
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidInput(f"BMC port must be 1-65535, got {port!r}", field="port")
    return port


def validate_username(user: object) -> str:
    if not isinstance(user, str) or not _USERNAME.match(user):
        raise InvalidInput("a BMC user name is required (1-64 characters, no spaces or ':')",
                           field="username")
    return user


def validate_password(password: object) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidInput("a BMC password is required", field="password")
    if len(password) > MAX_PASSWORD or any(c in password for c in "\r\n\x00"):
        raise InvalidInput(f"the BMC password must be one line of at most {MAX_PASSWORD} "
                           "characters", field="password")
    return password


def validate_system_id(system_id: object) -> str | None:
    if system_id is None or system_id == "":
        return None
    if not isinstance(system_id, str) or not _SYSTEM_ID.match(system_id):
        raise InvalidInput(f"{system_id!r} is not a Redfish system id (letters, digits, "
                           "'.', '_', '~', '-')", field="system_id")
    return system_id


def secrets_dir(conn: sqlite3.Connection) -> Path:
    """state_dir/bmc-secrets: next to the database file this connection has open."""
    row = conn.execute("PRAGMA database_list").fetchone()
    if not row or not row["file"]:
        raise RuntimeError("BMC secrets need a database file (not :memory:)")
    return Path(row["file"]).parent / SECRETS_DIR


def _write_secret(directory: Path, password: str) -> str:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ref = secrets.token_hex(16)
    tmp = directory / f".{ref}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / ref)
    return ref


def _remove_secret(directory: Path, ref: str | None) -> None:
    if ref:
        (directory / ref).unlink(missing_ok=True)


def _host_id(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM hosts WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no host named {name!r}")
    return row["id"]


def _row_to_bmc(row: sqlite3.Row) -> Bmc:
    return Bmc(host_id=row["host_id"], host=row["host"], kind=row["kind"],
               address=row["address"], port=row["port"], username=row["username"],
               verify_tls=bool(row["verify_tls"]), system_id=row["system_id"],
               power_state=row["power_state"], power_checked_at=row["power_checked_at"],
               last_error=row["last_error"])


_SELECT = "SELECT b.*, h.name AS host FROM host_bmc b JOIN hosts h ON h.id = b.host_id"


@dataclass(frozen=True)
class BmcInput:
    """A validated BMC setting; `password` None keeps the stored one."""

    kind: str
    address: str
    port: int
    username: str
    verify_tls: bool
    system_id: str | None
    password: str | None = field(default=None, repr=False)


def parse_input(d: dict[str, Any], *, password_required: bool = False) -> BmcInput:
    """Validate a BMC setting given as a dict (API body, hosts.json entry, form)."""
    unknown = set(d) - {"kind", "address", "port", "username", "password", "verify_tls",
                        "system_id"}
    if unknown:
        raise InvalidInput(f"unknown BMC field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    kind = validate_kind(d.get("kind"))
    verify = d.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise InvalidInput("verify_tls must be true or false", field="verify_tls")
    password = d.get("password")
    if password is not None or password_required:
        password = validate_password(password)
    return BmcInput(kind=kind, address=validate_address(d.get("address")),
                    port=validate_port(d.get("port"), kind),
                    username=validate_username(d.get("username")), verify_tls=verify,
                    system_id=validate_system_id(d.get("system_id")), password=password)


def upsert_in(conn: sqlite3.Connection, host_id: int, name: str, b: BmcInput,
              directory: Path) -> tuple[str | None, str | None]:
    """Inside the caller's transaction: store `b` for host `host_id`. Returns (new secret
    reference, replaced one): the caller removes the new one if its transaction fails and
    the replaced one once it committed (`commit_secrets`/`abandon_secret`)."""
    old = conn.execute("SELECT secret_ref FROM host_bmc WHERE host_id = ?",
                       (host_id,)).fetchone()
    if old is None and b.password is None:
        raise InvalidInput(f"host {name} has no BMC yet: a password is required", field="password")
    new_ref = _write_secret(directory, b.password) if b.password is not None else None
    ref = new_ref or old["secret_ref"]
    conn.execute(
        "INSERT INTO host_bmc (host_id, kind, address, port, username, secret_ref, verify_tls, "
        "system_id, power_state, power_checked_at, last_error, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL,?) ON CONFLICT(host_id) DO UPDATE SET "
        "kind=excluded.kind, address=excluded.address, port=excluded.port, "
        "username=excluded.username, secret_ref=excluded.secret_ref, "
        "verify_tls=excluded.verify_tls, system_id=excluded.system_id, power_state=NULL, "
        "power_checked_at=NULL, last_error=NULL, updated_at=excluded.updated_at",
        (host_id, b.kind, b.address, b.port, b.username, ref, int(b.verify_tls), b.system_id,
         now()))
    pw = "password replaced" if new_ref and old else "password stored" if new_ref else \
        "password kept"
    events.record(conn, "host.bmc_set",
                  f"BMC of {name}: {b.kind} {b.username}@{b.address}:{b.port} ({pw})",
                  host_id=host_id, data={"kind": b.kind, "address": b.address, "port": b.port})
    return new_ref, (old["secret_ref"] if old and new_ref else None)


def set_bmc(conn: sqlite3.Connection, name: str, b: BmcInput) -> Bmc:
    """Store host `name`'s BMC (a password is required the first time; None keeps it)."""
    directory = secrets_dir(conn)
    new_ref = replaced = None
    try:
        with transaction(conn):
            host_id = _host_id(conn, name)
            new_ref, replaced = upsert_in(conn, host_id, name, b, directory)
    except BaseException:
        _remove_secret(directory, new_ref)
        raise
    _remove_secret(directory, replaced)
    return get_bmc(conn, name)  # type: ignore[return-value]


def get_bmc(conn: sqlite3.Connection, name: str) -> Bmc | None:
    """Host `name`'s BMC, or None when it has none (NotFound for an unknown host)."""
    host_id = _host_id(conn, name)
    row = conn.execute(_SELECT + " WHERE b.host_id = ?", (host_id,)).fetchone()
    return _row_to_bmc(row) if row else None


def require_bmc(conn: sqlite3.Connection, name: str) -> Bmc:
    b = get_bmc(conn, name)
    if b is None:
        raise NotFound(f"host {name} has no BMC configured (nixie host bmc {name} set ...)")
    return b


def list_bmcs(conn: sqlite3.Connection) -> list[Bmc]:
    return [_row_to_bmc(r) for r in conn.execute(_SELECT + " ORDER BY h.name")]


def power_by_host(conn: sqlite3.Connection) -> dict[int, Bmc]:
    """host id -> its BMC (for the host list's power column)."""
    return {b.host_id: b for b in list_bmcs(conn)}


def clear_bmc(conn: sqlite3.Connection, name: str) -> bool:
    """Forget host `name`'s BMC and its password. Returns whether it had one."""
    with transaction(conn):
        host_id = _host_id(conn, name)
        row = conn.execute("SELECT secret_ref FROM host_bmc WHERE host_id = ?",
                           (host_id,)).fetchone()
        if row is None:
            return False
        conn.execute("DELETE FROM host_bmc WHERE host_id = ?", (host_id,))
        events.record(conn, "host.bmc_cleared", f"BMC of {name} removed", host_id=host_id)
    _remove_secret(secrets_dir(conn), row["secret_ref"])
    return True


def credentials(conn: sqlite3.Connection, name: str) -> Credentials:
    """The BMC of host `name` with its password (for the drivers only)."""
    row = conn.execute(_SELECT + " WHERE h.name = ?", (name,)).fetchone()
    if row is None:
        _host_id(conn, name)  # NotFound for an unknown host
        raise NotFound(f"host {name} has no BMC configured (nixie host bmc {name} set ...)")
    path = secrets_dir(conn) / row["secret_ref"]
    try:
        password = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"the BMC password of host {name} is missing ({path}): set it again "
                       f"with nixie host bmc {name} set ... --password-stdin") from None
    return Credentials(bmc=_row_to_bmc(row), password=password)


def record_power(conn: sqlite3.Connection, host_id: int, state: str | None,
                 error: str | None) -> str | None:
    """Store what the BMC answered (`state`), or the error talking to it (the last known
    state stays). Returns the state stored before."""
    with transaction(conn):
        row = conn.execute("SELECT power_state FROM host_bmc WHERE host_id = ?",
                           (host_id,)).fetchone()
        if row is None:
            return None
        if error is None:
            conn.execute("UPDATE host_bmc SET power_state = ?, power_checked_at = ?, "
                         "last_error = NULL WHERE host_id = ?", (state, now(), host_id))
        else:
            conn.execute("UPDATE host_bmc SET power_checked_at = ?, last_error = ? "
                         "WHERE host_id = ?", (now(), error, host_id))
    return row["power_state"]


def export_entry(conn: sqlite3.Connection, host_id: int, *, with_secrets: bool
                 ) -> dict[str, Any] | None:
    """A host's BMC as a hosts.json `bmc` object (the password only when asked)."""
    row = conn.execute(_SELECT + " WHERE b.host_id = ?", (host_id,)).fetchone()
    if row is None:
        return None
    b = _row_to_bmc(row)
    out: dict[str, Any] = {"kind": b.kind, "address": b.address, "port": b.port,
                           "username": b.username, "verify_tls": b.verify_tls}
    if b.system_id:
        out["system_id"] = b.system_id
    if with_secrets:
        path = secrets_dir(conn) / row["secret_ref"]
        if path.exists():
            out["password"] = path.read_text()
    return out


def remove_orphan_secrets(conn: sqlite3.Connection) -> int:
    """Delete secret files no BMC row refers to (a removed host's). Returns how many."""
    row = conn.execute("PRAGMA database_list").fetchone()
    if not row or not row["file"]:
        return 0  # an in-memory database holds no BMC passwords
    directory = secrets_dir(conn)
    if not directory.is_dir():
        return 0
    used = {r[0] for r in conn.execute("SELECT secret_ref FROM host_bmc")}
    gone = 0
    for p in directory.iterdir():
        if p.name not in used and not p.name.startswith("."):
            p.unlink(missing_ok=True)
            gone += 1
    return gone
