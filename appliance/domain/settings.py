"""Run-time settings: answers of the setup wizard and edits from the settings page.

The JSON config file is the declarative base. A setting stored here, under
`config.<dotted key>` in the `settings` table (JSON value), overrides that key
of the file for the services that read `effective_config()`. Only the keys in
`EDITABLE` may be set here; each is checked by the same checker the config
file uses, and the whole result must pass the config's cross-checks (for
example, the DHCP range inside the LAN network) or nothing is stored.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance.config.schema import Config, iter_keys, parse_config
from appliance.domain import events
from appliance.errors import ConfigError, InvalidInput
from appliance.state.db import now, transaction

PREFIX = "config."
SETUP_KEY = "setup.completed"

# config keys an admin may change from the web UI / API
EDITABLE = (
    "lan.interface", "wan.interface",
    "dhcp.mode", "dhcp.range", "dhcp.lease_seconds", "dhcp.unknown_clients",
    "boot.menu", "boot.menu_timeout_seconds", "boot.cmdline",
    "builder.kind", "builder.uri", "builder.ssh_key", "builder.max_jobs",
    "builder.substituters", "builder.trusted_public_keys",
)
_CHECKERS = {k: spec.check for k, spec in iter_keys() if k in EDITABLE}


def overrides(conn: sqlite3.Connection) -> dict[str, Any]:
    """{dotted key: value} of every stored override."""
    rows = conn.execute("SELECT key, value FROM settings WHERE key LIKE ?", (PREFIX + "%",))
    out = {}
    for r in rows:
        key = r["key"][len(PREFIX):]
        if key in _CHECKERS:
            out[key] = json.loads(r["value"])
    return out


def _merge(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(base))
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


def effective_config(cfg: Config, conn: sqlite3.Connection) -> Config:
    """The config file with the stored overrides applied."""
    ov = overrides(conn)
    if not ov:
        return cfg
    return parse_config(_merge(cfg.to_dict(), ov), cfg.path)


def effective_values(cfg: Config, conn: sqlite3.Connection) -> dict[str, Any]:
    """{dotted key: current value} for every editable key."""
    eff = effective_config(cfg, conn).to_dict()
    out = {}
    for key in EDITABLE:
        node: Any = eff
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def validate(cfg: Config, conn: sqlite3.Connection, values: dict[str, Any]) -> dict[str, Any]:
    """Check `values` ({dotted key: value}); InvalidInput names the key at fault."""
    clean = {}
    for key, value in values.items():
        if key not in _CHECKERS:
            raise InvalidInput(f"{key!r} is not a setting that can be changed here", field=key)
        try:
            clean[key] = _CHECKERS[key](key, value)
        except ConfigError as e:
            raise InvalidInput(e.problem, field=_field_of(e.key)) from None
    try:
        parse_config(_merge(cfg.to_dict(), overrides(conn) | clean), cfg.path)
    except ConfigError as e:
        raise InvalidInput(e.problem, field=_field_of(e.key)) from None
    return clean


def _field_of(key: str) -> str:
    """dhcp.range[0] -> dhcp.range"""
    return key.split("[", 1)[0]


def _file_value(cfg: Config, key: str) -> Any:
    node: Any = cfg.to_dict()
    for part in key.split("."):
        node = node[part]
    return node


def update(cfg: Config, conn: sqlite3.Connection, values: dict[str, Any],
           *, who: str | None = None) -> dict[str, Any]:
    """Validate and store overrides, all or nothing. A value equal to the config
    file's drops the override. Returns the effective values."""
    clean = validate(cfg, conn, values)
    with transaction(conn):
        _store(cfg, conn, clean, who)
    return effective_values(cfg, conn)


def _store(cfg: Config, conn: sqlite3.Connection, clean: dict[str, Any], who: str | None) -> None:
    """Write checked values inside the caller's transaction."""
    current = effective_values(cfg, conn)
    changed = sorted(k for k, v in clean.items() if current.get(k) != v)
    for key in changed:
        if clean[key] == _file_value(cfg, key):
            conn.execute("DELETE FROM settings WHERE key = ?", (PREFIX + key,))
        else:
            conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (PREFIX + key, json.dumps(clean[key])))
    if changed:
        events.record(conn, "settings.changed",
                      f"settings changed{f' by {who}' if who else ''}: {', '.join(changed)}",
                      data={"keys": changed})


def is_setup_complete(conn: sqlite3.Connection) -> bool:
    """The wizard ran, or an admin was made another way (`nixie admin create-user`:
    a headless install keeps the config file's answers and skips the wizard)."""
    return (conn.execute("SELECT 1 FROM settings WHERE key = ?", (SETUP_KEY,)).fetchone() is not None
            or conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None)


def complete_setup(cfg: Config, conn: sqlite3.Connection, *, username: str, password: str,
                   values: dict[str, Any]) -> int:
    """The setup wizard: the first admin user plus the network/builder answers, in one
    transaction (two browsers racing through the wizard cannot both win).

    Raises Conflict when setup was already done, InvalidInput for a bad answer
    (nothing is stored then)."""
    from appliance.domain import users
    from appliance.errors import Conflict

    clean = validate(cfg, conn, values)
    users.check_new_user(username, password)
    pw_hash = users.hash_password(password)
    with transaction(conn):
        if is_setup_complete(conn) or users.count_users(conn):
            raise Conflict("setup is already complete")
        uid = users.insert_user(conn, username, pw_hash)
        _store(cfg, conn, clean, username)
        conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)",
                     (SETUP_KEY, json.dumps({"at": now(), "by": username})))
        events.record(conn, "setup.completed", f"setup wizard completed by {username}")
    return uid
