"""The event log's budget for anonymous traffic and its retention (issue 15)."""

from __future__ import annotations

import os
import stat

import pytest

from appliance.domain import events
from appliance.state.db import Store, secure_state
from appliance.state.status import with_storage

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_the_budget_counts_the_excess_and_summarises_it_once():
    clock = Clock()
    b = events.AnonymousBudget(per_source=5, window=60, clock=clock)
    admitted = [b.admit("agent.rejected", "10.0.0.9") for _ in range(100)]
    assert admitted.count(True) == 5 and b.suppressed == 95
    assert b.admit("agent.rejected", "10.0.0.10")  # another source has its own budget
    assert b.take_due() == []  # its minute is not over
    clock.t += 61
    due = b.take_due()
    assert [(s.kind, s.source, s.count) for s in due] == [("agent.rejected", "10.0.0.9", 95)]
    assert b.take_due() == []  # once
    assert b.admit("agent.rejected", "10.0.0.9")  # a new minute


def test_many_sources_share_one_budget_per_kind():
    """Spoofed UDP sources cannot multiply the budget: one kind from all sources gets
    KIND_FACTOR sources' worth."""
    b = events.AnonymousBudget(per_source=2, window=60, clock=Clock())
    written = sum(b.admit("boot.tftp", f"10.1.{i >> 8}.{i & 255}") for i in range(5000))
    assert written == 2 * events.KIND_FACTOR


def test_record_writes_within_the_budget_and_a_summary_after(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(events, "BUDGET", events.AnonymousBudget(per_source=3, clock=clock))
    conn = Store(tmp_path / "nixie.db").conn()
    for _ in range(1500):
        events.record(conn, "agent.rejected", "wrong token", ip="10.0.0.9")
    events.record(conn, "host.added", "not anonymous: never limited")
    assert [r["kind"] for r in events.recent(conn)] == ["host.added"] + ["agent.rejected"] * 3
    clock.t += 60
    events.record(conn, "boot.script", "the next event writes the summary", ip="10.0.0.7")
    rows = events.recent(conn, kind="events.suppressed")
    assert len(rows) == 1 and rows[0]["level"] == "warning" and rows[0]["ip"] == "10.0.0.9"
    assert rows[0]["data"]["count"] == 1497
    assert rows[0]["message"].startswith("1497 agent.rejected events from 10.0.0.9 not recorded")


def test_prune_by_age_count_and_expired_tokens(tmp_path):
    conn = Store(tmp_path / "nixie.db").conn()
    t = 1_700_000_000.0
    conn.executemany("INSERT INTO events (ts, kind) VALUES (?, 'x')",
                     [(t - 10 * 86400 + i,) for i in range(100)] + [(t - 60 + i / 100,)
                                                                   for i in range(3000)])
    conn.execute("INSERT INTO hosts (name, flake, attr, created_at) VALUES ('h', 'f', 'a', 0)")
    conn.executemany("INSERT INTO boot_tokens (token_hash, host_id, created_at, expires_at) "
                     "VALUES (?, 1, 0, ?)", [("old", t - 1), ("live", t + 60)])
    p = events.prune(conn, max_age_seconds=7 * 86400, max_rows=1000, t=t)
    assert p == events.Pruned(events=2100, boot_tokens=1)
    left = conn.execute("SELECT count(*), min(ts) FROM events").fetchone()
    assert left[0] == 1000 and left[1] > t - 60  # the newest thousand
    assert [r[0] for r in conn.execute("SELECT token_hash FROM boot_tokens")] == ["live"]


def test_a_new_database_is_owner_only_and_serve_fixes_old_modes(tmp_path):
    old = os.umask(0o022)
    try:
        Store(tmp_path / "new" / "nixie.db")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "nixie.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    os.chmod(tmp_path / "new", 0o755)
    os.chmod(tmp_path / "new" / "nixie.db", 0o644)
    changed = secure_state(tmp_path / "new", tmp_path / "new" / "nixie.db")
    assert changed == [str(tmp_path / "new"), str(tmp_path / "new" / "nixie.db")]
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "nixie.db").st_mode) == 0o600


def test_health_warns_about_lease_commits_that_fail(tmp_path):
    trouble = {"since": 0.0, "error": "database or disk is full", "kept_renewals": 3,
               "not_durable": 2, "lost_events": 7}
    h = with_storage({"ok": True, "services": {"dhcp": {"stats": {"disk_trouble": trouble}}}},
                     tmp_path)
    assert h["ok"] is False and h["storage"]["ok"]
    assert h["warnings"][0].startswith("LEASES NOT WRITTEN")
    assert with_storage({"ok": True, "services": {}}, tmp_path)["ok"] is True
