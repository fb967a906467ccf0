"""Versioned schema migrations, applied in order by `db.apply_migrations`.

Never edit a released migration: add the next version. PRAGMA user_version
holds the version a database is at. JSON columns are TEXT holding JSON.
"""

MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL                     -- JSON
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_login REAL
);
CREATE TABLE flakes (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE hosts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    flake TEXT NOT NULL,
    attr TEXT NOT NULL,
    mode TEXT NOT NULL DEFAULT 'netboot' CHECK (mode IN ('netboot', 'install', 'local')),
    created_at REAL NOT NULL
);
CREATE TABLE host_macs (
    mac TEXT PRIMARY KEY,
    host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
""",
    2: """
ALTER TABLE flakes ADD COLUMN locked_url TEXT;
ALTER TABLE flakes ADD COLUMN configurations TEXT NOT NULL DEFAULT '[]';
ALTER TABLE flakes ADD COLUMN last_refresh REAL;
ALTER TABLE flakes ADD COLUMN last_error TEXT;

ALTER TABLE hosts ADD COLUMN state TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE hosts ADD COLUMN state_changed_at REAL;
ALTER TABLE hosts ADD COLUMN ip TEXT;
ALTER TABLE hosts ADD COLUMN last_seen REAL;
ALTER TABLE hosts ADD COLUMN current_generation INTEGER;
ALTER TABLE hosts ADD COLUMN updated_at REAL;
UPDATE hosts SET updated_at = created_at;
CREATE INDEX host_macs_host ON host_macs(host_id);

ALTER TABLE events ADD COLUMN level TEXT NOT NULL DEFAULT 'info';
ALTER TABLE events ADD COLUMN host_id INTEGER REFERENCES hosts(id) ON DELETE SET NULL;
ALTER TABLE events ADD COLUMN mac TEXT;
ALTER TABLE events ADD COLUMN ip TEXT;
ALTER TABLE events ADD COLUMN data TEXT;   -- JSON
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_host_ts ON events(host_id, ts);
CREATE INDEX events_kind_ts ON events(kind, ts);

ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used REAL,
    revoked_at REAL
);

CREATE TABLE leases (
    ip TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    client_id TEXT,
    hostname TEXT,
    state TEXT NOT NULL CHECK (state IN ('offered', 'bound', 'released', 'declined', 'expired')),
    starts REAL NOT NULL,
    expires REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX leases_mac ON leases(mac);
CREATE INDEX leases_state_expires ON leases(state, expires);

CREATE TABLE builds (
    id INTEGER PRIMARY KEY,
    host_id INTEGER REFERENCES hosts(id) ON DELETE SET NULL,
    host_name TEXT NOT NULL,
    flake TEXT NOT NULL,
    attr TEXT NOT NULL,
    locked_url TEXT,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    toplevel TEXT,
    log_path TEXT,
    error TEXT,
    progress TEXT,                          -- JSON
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX builds_status ON builds(status, queued_at);
CREATE INDEX builds_host ON builds(host_id, queued_at);

CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    build_id INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    toplevel TEXT NOT NULL,
    gc_root TEXT,
    created_at REAL NOT NULL,
    UNIQUE (host_id, number)
);

CREATE TABLE boot_tokens (
    token_hash TEXT PRIMARY KEY,
    host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    generation_id INTEGER REFERENCES generations(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_used REAL
);
CREATE INDEX boot_tokens_host ON boot_tokens(host_id);
""",
    3: """
ALTER TABLE hosts ADD COLUMN ip_reservation TEXT;
CREATE UNIQUE INDEX hosts_ip_reservation ON hosts(ip_reservation) WHERE ip_reservation IS NOT NULL;
""",
    # issue 5: MACs each nixosConfiguration declares (config.nixie.netboot.macs),
    # JSON {"configuration name": ["mac", ...]}
    5: """
ALTER TABLE flakes ADD COLUMN macs TEXT NOT NULL DEFAULT '{}';
""",
    8: """
CREATE TABLE net_transactions (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'confirmed', 'rolling_back', 'rolled_back', 'failed')),
    created_at REAL NOT NULL,
    deadline REAL NOT NULL,
    before TEXT NOT NULL,                   -- JSON: kernel state of the links it touches
    desired TEXT NOT NULL,                  -- JSON: the network settings applied
    ops TEXT NOT NULL,                      -- JSON: the operations applied
    netns TEXT,                             -- network namespace it was applied in (null: ours)
    firewall_before TEXT,                   -- nft ruleset to restore ('' none; null: not touched)
    finished_at REAL,
    error TEXT
);
CREATE INDEX net_transactions_state ON net_transactions(state, deadline);

CREATE TABLE vpn_peers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,           -- the peer's tunnel IPv4
    key_file TEXT,                          -- its private key (0600) under state_dir/vpn
    created_at REAL NOT NULL,
    revoked_at REAL
);
""",
    # who claimed a rollback when, so a second runner does not undo it twice
    9: """
ALTER TABLE net_transactions ADD COLUMN claimed_at REAL;
""",
    # issue 7: failed logins, shared by every web worker process (appliance/domain/loginlimits.py)
    17: """
CREATE TABLE login_failures (
    scope TEXT NOT NULL CHECK (scope IN ('ip', 'user')),
    key TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX login_failures_key ON login_failures(scope, key, ts);
""",
    # flakes are evaluated in the background: queued (added, refresh asked) -> evaluating -> idle
    18: """
ALTER TABLE flakes ADD COLUMN eval_state TEXT NOT NULL DEFAULT 'idle'
    CHECK (eval_state IN ('queued', 'evaluating', 'idle'));
ALTER TABLE flakes ADD COLUMN eval_started_at REAL;
""",
    # issue 15: agent tokens bound to the boot they were issued for: the address that fetched
    # the script (one holding the host's lease), what the boot is (netboot or install), the
    # last report (a token only moves forward) and its lifetimes. At most one per host and
    # generation. Tokens of earlier versions are bound to no address: void.
    19: """
DROP TABLE boot_tokens;
CREATE TABLE boot_tokens (
    token_hash TEXT PRIMARY KEY,
    host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    generation_id INTEGER REFERENCES generations(id) ON DELETE CASCADE,
    client_ip TEXT,
    purpose TEXT NOT NULL DEFAULT 'netboot' CHECK (purpose IN ('netboot', 'install')),
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    ttl_seconds REAL NOT NULL DEFAULT 3600,
    used_ttl_seconds REAL NOT NULL DEFAULT 120,
    last_used REAL,
    last_event TEXT
);
CREATE INDEX boot_tokens_host ON boot_tokens(host_id);
CREATE UNIQUE INDEX boot_tokens_boot ON boot_tokens(host_id, ifnull(generation_id, 0))
    WHERE client_ip IS NOT NULL;
""",
    # issue 15: a network change's deadline on the boot clock (CLOCK_BOOTTIME) of the boot it
    # was made in: a wall-clock step cannot delay it, and a reboot rolls it back at start
    20: """
ALTER TABLE net_transactions ADD COLUMN boot_id TEXT;
ALTER TABLE net_transactions ADD COLUMN deadline_boottime REAL;
""",
    # issue 15: failed logins count per (user name, address) and per address; no per-user
    # count any address can fill (appliance/domain/loginlimits.py). Old counts are dropped.
    21: """
DROP TABLE login_failures;
CREATE TABLE login_failures (
    scope TEXT NOT NULL CHECK (scope IN ('ip', 'pair')),
    key TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX login_failures_key ON login_failures(scope, key, ts);
""",
    # issue 21: a host's BMC (IPMI or Redfish). The password is not here: it is a 0600 file
    # state_dir/bmc-secrets/<secret_ref> (appliance/domain/bmc.py).
    24: """
CREATE TABLE host_bmc (
    host_id INTEGER PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('ipmi', 'redfish')),
    address TEXT NOT NULL,
    port INTEGER,
    username TEXT NOT NULL,
    secret_ref TEXT NOT NULL,
    verify_tls INTEGER NOT NULL DEFAULT 1,
    system_id TEXT,
    power_state TEXT,
    power_checked_at REAL,
    last_error TEXT,
    updated_at REAL NOT NULL
);
""",
    # issue 16: DHCPv6 bindings (netservices/dhcp6, appliance/domain/lease_store6.py)
    22: """
CREATE TABLE leases6 (
    address TEXT PRIMARY KEY,               -- IPv6, compressed form
    duid TEXT NOT NULL,                     -- hex
    iaid INTEGER NOT NULL,
    mac TEXT,                               -- from the DUID, option 79 or an EUI-64 source
    hostname TEXT,
    state TEXT NOT NULL CHECK (state IN ('bound', 'released', 'declined', 'expired')),
    starts REAL NOT NULL,
    expires REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX leases6_mac ON leases6(mac);
CREATE INDEX leases6_state_expires ON leases6(state, expires);
""",
    # issue 16: a host's fixed DHCPv6 address (by its MAC, which DUID-LL/LLT carry)
    23: """
ALTER TABLE hosts ADD COLUMN ip6_reservation TEXT;
CREATE UNIQUE INDEX hosts_ip6_reservation ON hosts(ip6_reservation)
    WHERE ip6_reservation IS NOT NULL;
""",
    # issue 18: builds follow the flake (policy, the configurations' toplevels, credentials and
    # webhook kept in files under state_dir/flakes/<id>/), hosts bound from the flake or adopted,
    # machines that PXE-boot without a host record (capped: appliance/domain/machines.py)
    27: """
ALTER TABLE flakes ADD COLUMN build_policy TEXT NOT NULL DEFAULT 'on_change'
    CHECK (build_policy IN ('on_change', 'manual'));
ALTER TABLE flakes ADD COLUMN toplevels TEXT NOT NULL DEFAULT '{}';  -- JSON {configuration: {drv, out}}
ALTER TABLE flakes ADD COLUMN credential TEXT NOT NULL DEFAULT 'none'
    CHECK (credential IN ('none', 'token', 'ssh_key'));
ALTER TABLE flakes ADD COLUMN hook_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE flakes ADD COLUMN hook_pending_at REAL;  -- a webhook came while one was recent
ALTER TABLE flakes ADD COLUMN last_checked REAL;     -- the last locked-revision check

ALTER TABLE hosts ADD COLUMN source TEXT NOT NULL DEFAULT 'manual'
    CHECK (source IN ('manual', 'flake', 'adopted'));
ALTER TABLE hosts ADD COLUMN built_drv TEXT;  -- the configuration's .drv the router last built

CREATE TABLE waiting_machines (
    mac TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    arch INTEGER,                           -- DHCP option 93
    firmware TEXT,                          -- bios | uefi | uefi-http | arm64 ...
    vendor_class TEXT,                      -- DHCP option 60
    ip TEXT,
    seen INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX waiting_machines_last_seen ON waiting_machines(last_seen);
""",
    # issue 17: install to disk. A host installed to its disk keeps one disk token there
    # (stored here as a hash) to report its local boots; `boot_mode` is how the host last
    # came up as its agent reported it: netboot, install (the installer) or local (its disk).
    26: """
CREATE TABLE disk_tokens (
    host_id INTEGER PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    generation_id INTEGER REFERENCES generations(id) ON DELETE SET NULL,
    toplevel TEXT,
    created_at REAL NOT NULL,
    last_used REAL
);
ALTER TABLE hosts ADD COLUMN boot_mode TEXT CHECK (boot_mode IN ('netboot', 'install', 'local'));
""",
    # issue 16: a host's IPv6 address on the LAN (its agent's report over IPv6, the IPv6
    # neighbour table), beside its IPv4 `ip`
    28: """
ALTER TABLE hosts ADD COLUMN ip6 TEXT;
""",
    # 32: a disk token's address when the router knows none of the host's (proxy DHCP:
    # another server leases); the address the installer reported `installed` from.
    32: """
ALTER TABLE disk_tokens ADD COLUMN bound_ip TEXT;
""",
    # 33: a host's SSH host key, pinned from its agent's first report of a boot, and the
    # hash of that boot's token (appliance/domain/hostkeys.py); the push install trusts
    # only it.
    33: """
ALTER TABLE hosts ADD COLUMN ssh_host_key TEXT;
ALTER TABLE hosts ADD COLUMN ssh_host_key_boot TEXT;
""",
    # issue 19: the systems of generations the router dropped (beyond builder.keep_generations,
    # or with their host), whose store paths `appliance.nix.gc.collect` deletes once nothing
    # else keeps them.
    37: """
CREATE TABLE gc_dropped (
    toplevel TEXT PRIMARY KEY,
    dropped_at REAL NOT NULL
);
""",
    # issue 20: boot media. A media token is baked into a downloaded ISO/USB/EFI image; the
    # boot endpoint takes it in place of a known MAC (per host) or next to the MAC (generic).
    # Only its hash is kept; revoked tokens stay listed.
    39: """
CREATE TABLE media_tokens (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    host_id INTEGER REFERENCES hosts(id) ON DELETE CASCADE,  -- NULL: generic media
    label TEXT NOT NULL DEFAULT '',
    base_url TEXT NOT NULL,                                   -- the URL baked into the media
    format TEXT NOT NULL CHECK (format IN ('iso', 'usb', 'efi', 'script')),
    created_at REAL NOT NULL,
    last_used REAL,
    last_ip TEXT,
    uses INTEGER NOT NULL DEFAULT 0,
    revoked_at REAL
);
CREATE INDEX media_tokens_host ON media_tokens(host_id);
""",
    # issue 17 item 4: cached netboot. A host in mode `cached` PXE-boots every time, keeps
    # /nix/store on its disk and fetches only the paths it lacks; its boot tokens have
    # purpose `cached` and it comes up with boot mode `cached`. Only CHECK constraints
    # widen: SQLite's documented schema edit for changes that leave the stored data valid
    # (a table rebuild would cascade deletes through the foreign keys). The table made and
    # dropped last changes the schema cookie, so every other connection rereads the schema.
    41: """
PRAGMA writable_schema = ON;
UPDATE sqlite_master SET sql = replace(sql, '''netboot'', ''install'', ''local'')',
    '''netboot'', ''install'', ''local'', ''cached'')') WHERE type = 'table' AND name = 'hosts';
UPDATE sqlite_master SET sql = replace(sql, 'purpose IN (''netboot'', ''install'')',
    'purpose IN (''netboot'', ''install'', ''cached'')')
    WHERE type = 'table' AND name = 'boot_tokens';
PRAGMA writable_schema = RESET;
CREATE TABLE schema_cookie_41 (x INTEGER);
DROP TABLE schema_cookie_41;
""",
    # issue 16: a DHCPv6 lease commit wrote one random page of leases6_mac per new client
    # (half the commit's cost). The lookups by MAC are for registered hosts only, so the
    # row carries its host (kept by these triggers when MACs move) and only those rows
    # enter the (partial) index; the DHCPv6 store fills host_id as it writes.
    44: """
ALTER TABLE leases6 ADD COLUMN host_id INTEGER REFERENCES hosts(id) ON DELETE SET NULL;
UPDATE leases6 SET host_id = (SELECT host_id FROM host_macs WHERE mac = leases6.mac);
DROP INDEX leases6_mac;
CREATE INDEX leases6_host ON leases6(host_id) WHERE host_id IS NOT NULL;
CREATE TRIGGER host_macs_leases6_insert AFTER INSERT ON host_macs BEGIN
    UPDATE leases6 SET host_id = NEW.host_id WHERE mac = NEW.mac;
END;
CREATE TRIGGER host_macs_leases6_update AFTER UPDATE ON host_macs BEGIN
    UPDATE leases6 SET host_id = NULL WHERE mac = OLD.mac AND host_id = OLD.host_id;
    UPDATE leases6 SET host_id = NEW.host_id WHERE mac = NEW.mac;
END;
CREATE TRIGGER host_macs_leases6_delete AFTER DELETE ON host_macs BEGIN
    UPDATE leases6 SET host_id = NULL WHERE mac = OLD.mac AND host_id = OLD.host_id;
END;
""",
}
