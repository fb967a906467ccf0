-- A state database written by schema version 1 (for the upgrade test).
BEGIN TRANSACTION;
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
INSERT INTO "events" VALUES(1,1700000000.0,'host.added','host machine1 added');
CREATE TABLE flakes (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
INSERT INTO "flakes" VALUES(1,'github:me/infra',1700000000.0);
CREATE TABLE host_macs (
    mac TEXT PRIMARY KEY,
    host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE
);
INSERT INTO "host_macs" VALUES('bc:24:11:d0:28:34',1);
INSERT INTO "host_macs" VALUES('bc:24:11:d0:28:35',2);
CREATE TABLE hosts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    flake TEXT NOT NULL,
    attr TEXT NOT NULL,
    mode TEXT NOT NULL DEFAULT 'netboot' CHECK (mode IN ('netboot', 'install', 'local')),
    created_at REAL NOT NULL
);
INSERT INTO "hosts" VALUES(1,'machine1','github:me/infra','nixosConfigurations.machine1','netboot',1700000000.0);
INSERT INTO "hosts" VALUES(2,'machine2','github:me/infra','nixosConfigurations.machine2','install',1700000001.0);
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
COMMIT;
PRAGMA user_version = 1;
