import sqlite3
from pathlib import Path

import pytest

from appliance.domain import hosts
from appliance.state import db
from appliance.state.migrations import MIGRATIONS

DATA = Path(__file__).resolve().parents[1] / "data"


def test_fresh_db_is_at_latest_version_in_wal(tmp_path):
    conn = db.connect(tmp_path / "nixie.db")
    assert db.schema_version(conn) == max(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"flakes", "hosts", "host_macs", "leases", "builds", "generations", "events", "users",
            "api_tokens", "settings", "boot_tokens"} <= tables


def test_v1_fixture_upgrades_in_place(tmp_path):
    """tests/data/nixie-v1.sql is a database written by schema version 1 with data in it."""
    path = tmp_path / "nixie.db"
    old = sqlite3.connect(path)
    old.executescript((DATA / "nixie-v1.sql").read_text())
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    old.close()
    conn = db.connect(path)
    assert db.schema_version(conn) == max(MIGRATIONS)
    h = hosts.get_host(conn, "machine1")
    assert h["macs"] == ["bc:24:11:d0:28:34"]
    assert h["state"] == "unknown" and h["updated_at"] == h["created_at"]
    # the upgraded database works for new writes
    hosts.add_host(conn, "machine3", ["bc:24:11:00:00:03"], "github:me/infra")
    assert len(hosts.list_hosts(conn)) == 3
    # and migrating again is a no-op
    assert db.apply_migrations(conn) == []


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "nixie.db"
    c = sqlite3.connect(path)
    c.execute("PRAGMA user_version = 999")
    c.close()
    with pytest.raises(db.SchemaTooNew):
        db.connect(path)


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    path = tmp_path / "nixie.db"
    monkeypatch.setitem(MIGRATIONS, max(MIGRATIONS) + 1, "CREATE TABLE ok1 (x);\nSELECT * FROM missing_table;")
    with pytest.raises(sqlite3.OperationalError):
        db.connect(path)
    conn = db.connect(path, migrate=False)
    assert db.schema_version(conn) == max(MIGRATIONS) - 1
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name='ok1'").fetchone()
