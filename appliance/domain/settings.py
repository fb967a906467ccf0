"""The admin's side of the desired state: answers of the setup wizard and edits
from the Settings page, the API and the CLI.

The JSON config file is the declarative base. A value stored here, under
`config.<dotted key>` in the `settings` table, overrides that key of the file;
the confirmed network settings (key `network`) come last (see
`appliance.config.resolve`). Only the keys in `EDITABLE` may be set here, never
one the file lists in `locked`; each is checked by the same checker the config
file uses, and the whole result must pass the config's cross-checks (for
example, the DHCP range inside the LAN network) or nothing is stored.

`nixie serve` resolves the same data into the config its services run with
and applies every change within 2 s (`appliance.runtime.wiring`); it records
the outcome under `desired.applied`, which `apply_status` reads back.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import time
from typing import Any, Literal

from appliance.config.resolve import NETWORK_KEYS, lookup, merged, resolve
from appliance.config.schema import Config, iter_keys, parse_config
from appliance.domain import events, setupcode, users
from appliance.domain.ipv6 import lan_prefix6
from appliance.errors import ConfigError, Conflict, InvalidInput
from appliance.state import kv
from appliance.state.db import now, transaction
from appliance.state.status import running_status

PREFIX = "config."
SETUP_KEY = "setup.completed"
NETWORK_KEY = "network"  # confirmed network settings (appliance.router.network)
CHANGE_KEY = "desired.last_change"  # who changed what, when (read by the apply event)
APPLIED_KEY = "desired.applied"  # the last apply by nixie serve: at, ok, error, changed

log = logging.getLogger("nixie.settings")

# config keys an admin may change from the web UI / API / CLI
EDITABLE = (
    "lan.interface", "wan.interface",
    "dhcp.mode", "dhcp.range", "dhcp.lease_seconds", "dhcp.unknown_clients",
    "lan.address6", "ra.enable", "dhcp6.mode", "dhcp6.range", "dhcp6.preferred_seconds",
    "dhcp6.valid_seconds",
    "boot.menu", "boot.menu_timeout_seconds", "boot.cmdline", "boot.remote", "boot.media_url",
    "builder.kind", "builder.uri", "builder.ssh_key", "builder.max_jobs",
    "builder.substituters", "builder.trusted_public_keys",
    "retention.event_days", "retention.event_rows", "gc.interval_seconds", "gc.disk_warn_percent",
)
_CHECKERS = {k: spec.check for k, spec in iter_keys() if k in EDITABLE}
# network settings fields of the keys both may set
_NETWORK_FIELD = {"lan.interface": "lan_interface", "wan.interface": "wan_interface"}


def overrides(conn: sqlite3.Connection) -> dict[str, Any]:
    """{dotted key: value} of every stored override."""
    return {k: v for k, v in kv.with_prefix(conn, PREFIX).items() if k in _CHECKERS}


def network(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The confirmed network settings as stored, or None (the file's)."""
    return kv.get(conn, NETWORK_KEY)


def effective_config(cfg: Config, conn: sqlite3.Connection) -> Config:
    """The config file with the stored overrides and network settings applied.

    A stored combination the file no longer accepts (the file changed under it)
    is logged and the file's values are used, never half of it."""
    try:
        return resolve(cfg, overrides(conn), network(conn))
    except ConfigError as e:
        log.warning("stored settings do not fit the config file; using the file's",
                    extra={"key": e.key, "problem": e.problem})
        return cfg


def effective_values(cfg: Config, conn: sqlite3.Connection) -> dict[str, Any]:
    """{dotted key: current value} for every editable key."""
    eff = effective_config(cfg, conn).to_dict()
    return {key: lookup(eff, key) for key in EDITABLE}


def locked(cfg: Config) -> dict[str, str]:
    """{dotted key: where it comes from} for the editable keys the deployment pins."""
    where = cfg.path or "the config file"
    return {k: where for k in EDITABLE if k in set(cfg.locked)}


def validate(cfg: Config, conn: sqlite3.Connection, values: dict[str, Any]) -> dict[str, Any]:
    """Check `values` ({dotted key: value}); InvalidInput names the key at fault."""
    clean = {}
    pinned = set(cfg.locked)
    for key, value in values.items():
        if key not in _CHECKERS:
            raise InvalidInput(f"{key!r} is not a setting that can be changed here", field=key)
        if key in pinned:
            raise InvalidInput(f"{key} is set by the deployment ({cfg.path or 'config file'}) "
                               "and cannot be changed here", field=key)
        try:
            clean[key] = _CHECKERS[key](key, value)
        except ConfigError as e:
            raise InvalidInput(e.problem, field=_field_of(e.key)) from None
    try:
        new = parse_config(merged(cfg, overrides(conn) | clean, _network_with(conn, clean)),
                           cfg.path)
    except ConfigError as e:
        raise InvalidInput(e.problem, field=_field_of(e.key)) from None
    _check_range6(conn, new)
    return clean


def _check_range6(conn: sqlite3.Connection, c: Config) -> None:
    """A DHCPv6 range must lie in the prefix the router serves: with lan.address6 null,
    the stored ULA (the config's cross-check knows only a configured lan.address6)."""
    if c.dhcp6.range is None or c.lan.address6 is not None:
        return
    prefix = lan_prefix6(conn, None)  # the stored ULA's; None before the first start made one
    if prefix is None:
        return
    net6 = ipaddress.IPv6Network(prefix)
    for a in c.dhcp6.range:
        if ipaddress.IPv6Address(a) not in net6:
            raise InvalidInput(f"{a} is outside the LAN prefix {net6} (the generated ULA; set "
                               "lan.address6 to serve another prefix)", field="dhcp6.range")


def _network_with(conn: sqlite3.Connection, clean: dict[str, Any]) -> dict[str, Any] | None:
    """The stored network settings with the interface names in `clean`: an admin who
    renames the LAN interface here means the interface the services use."""
    net = network(conn)
    if net is None:
        return None
    net = dict(net)
    for key, fieldname in _NETWORK_FIELD.items():
        if key in clean:
            net[fieldname] = clean[key]
    return net


def _field_of(key: str) -> str:
    """dhcp.range[0] -> dhcp.range"""
    return key.split("[", 1)[0]


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
    base = cfg.to_dict()
    for key in changed:
        if clean[key] == lookup(base, key):
            kv.delete(conn, PREFIX + key)
        else:
            kv.put(conn, PREFIX + key, clean[key])
    if changed and network(conn) is not None and set(changed) & set(NETWORK_KEYS):
        kv.put(conn, NETWORK_KEY, _network_with(conn, clean))
    if changed:
        kv.put(conn, CHANGE_KEY, {"at": now(), "by": who, "keys": changed})
        events.record(conn, "settings.changed",
                      f"settings changed{f' by {who}' if who else ''}: {', '.join(changed)}",
                      data={"keys": changed, "by": who})


def apply_status(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """What `nixie serve` did with the last change: {at, ok, error, changed}, or None."""
    return kv.get(conn, APPLIED_KEY)


def wait_applied(conn: sqlite3.Connection, since: float, timeout: float = 2.5
                 ) -> dict[str, Any] | None:
    """The apply status `nixie serve` recorded at or after `since` (a change saved at
    that time), waiting up to `timeout` s; None when serve did not apply it in time
    (not running: the change applies when it starts)."""
    deadline = time.monotonic() + timeout
    while True:
        st = apply_status(conn)
        if st is not None and st.get("at", 0) >= since:
            return st
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


# what became of a saved change: nothing changed; stored while serve is not running (it
# applies when serve starts); not applied within the wait; applied; refused by serve
Outcome = Literal["unchanged", "saved", "pending", "applied", "failed"]


def apply_outcome(conn: sqlite3.Connection, since: float, timeout: float = 2.5
                  ) -> tuple[Outcome, dict[str, Any] | None]:
    """What became of a save made at `since` (`now()` just before it), and serve's
    apply status: waits up to `timeout` s only while `nixie serve` runs. The Settings
    page, the wizard, `PATCH /api/v1/settings` and `nixie config set` all ask this."""
    if (last_change(conn) or {}).get("at", 0) < since:
        return "unchanged", None
    if not serve_running(conn):
        return "saved", None
    st = wait_applied(conn, since, timeout)
    if st is None:
        return "pending", None
    return ("applied" if st.get("ok") else "failed"), st


def serve_running(conn: sqlite3.Connection) -> bool:
    """Whether a `nixie serve` runs on this state (its heartbeat is fresh): then a
    saved change is applied within 2 s; else when serve starts."""
    return running_status(conn) is not None


def record_apply(conn: sqlite3.Connection, status: dict[str, Any]) -> None:
    kv.put(conn, APPLIED_KEY, status)


def last_change(conn: sqlite3.Connection) -> dict[str, Any] | None:
    return kv.get(conn, CHANGE_KEY)


def is_setup_complete(conn: sqlite3.Connection) -> bool:
    """The wizard ran, or an admin was made another way (`nixie admin create-user`:
    a headless install keeps the config file's answers and skips the wizard)."""
    return (kv.get(conn, SETUP_KEY) is not None
            or conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None)


def issue_setup_code(conn: sqlite3.Connection, state_dir: str) -> str | None:
    """At `nixie serve` start: while setup is pending, make sure a setup code is
    outstanding (appliance/domain/setupcode.py); returns it when it is new (to log
    it once). Once setup is complete (also by `nixie admin create-user`) a code
    left over is deleted."""
    if is_setup_complete(conn):
        if setupcode.outstanding(conn):
            setupcode.consume(conn)
        setupcode.remove_file(state_dir)
        return None
    return setupcode.issue(conn, state_dir)


def complete_setup(cfg: Config, conn: sqlite3.Connection, *, username: str, password: str,
                   values: dict[str, Any], setup_code: str | None) -> int:
    """The setup wizard: the first admin user plus the network/builder answers, in one
    transaction (two browsers racing through the wizard cannot both win). It needs
    the one-time setup code `nixie serve` issued, and uses it up.

    Raises Conflict when setup was already done, InvalidInput for a bad answer or a
    wrong setup code (nothing is stored then)."""
    clean = validate(cfg, conn, values)
    users.check_new_user(username, password)
    pw_hash = users.hash_password(password)
    with transaction(conn):
        if is_setup_complete(conn) or users.count_users(conn):
            raise Conflict("setup is already complete")
        setupcode.check(conn, setup_code)
        setupcode.consume(conn)
        uid = users.insert_user(conn, username, pw_hash)
        _store(cfg, conn, clean, username)
        kv.put(conn, SETUP_KEY, {"at": now(), "by": username})
        events.record(conn, "setup.completed", f"setup wizard completed by {username}")
    setupcode.remove_file(cfg.state_dir)
    return uid
