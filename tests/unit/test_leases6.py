"""DHCPv6 bindings in the state DB: the lease store's durable commit and reload, the
ULA made once, and `nixie lease list` showing IPv6 leases next to IPv4 ones."""

from __future__ import annotations

import json
import time

from appliance.domain import agent, hosts
from appliance.domain.boot_backend import SqliteBackend
from appliance.domain.ipv6 import generate_ula, lan_address6, server_duid6
from appliance.domain.lease_store6 import SqliteLease6Store
from appliance.state.db import Store, _split_sql, apply_migrations, connect
from appliance.state.migrations import MIGRATIONS
from netservices.dhcp.store import EventRecord
from netservices.dhcp6.store import Lease6Record


def test_store_commits_reloads_and_the_cli_lists_ipv6_leases(config_file, state_dir, nixie):
    db = state_dir / "nixie.db"
    store = SqliteLease6Store(db)
    t = time.time()
    store.commit([Lease6Record("fd00:77::1:5", "000300015254001234ab", 1, "52:54:00:12:34:ab",
                               "web1", "bound", t, t + 600, t)],
                 [EventRecord("dhcp6.lease", "fd00:77::1:5 leased", t)])
    store.commit([Lease6Record("fd00:77::1:5", "000300015254001234ab", 1, None, None, "bound",
                               t, t + 900, t)], [])
    [row] = store.load_leases6()
    assert (row.address, row.mac, row.hostname, row.expires) == (
        "fd00:77::1:5", "52:54:00:12:34:ab", "web1", t + 900)  # kept what the renewal lacked
    store.close()
    r = nixie("lease", "list", "--json", config=config_file)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["ip"], x["mac"], x["family"], x["state"]) for x in rows] == [
        ("fd00:77::1:5", "52:54:00:12:34:ab", 6, "bound")]
    r = nixie("lease", "list", config=config_file)
    assert "fd00:77::1:5" in r.stdout and "52:54:00:12:34:ab" in r.stdout


def test_ula_and_server_duid_are_made_once_and_kept(tmp_path):
    conn = connect(tmp_path / "nixie.db")
    a = lan_address6(conn, None)
    assert a.startswith("fd") and a.endswith("::1/64")
    assert lan_address6(conn, None) == a and lan_address6(conn, "fd00:9::1/64") == "fd00:9::1/64"
    assert generate_ula(bytes(5)) == "fd00::1/64"
    d = server_duid6(conn)
    assert d[:2] == b"\x00\x04" and len(d) == 18 and server_duid6(conn) == d


def test_a_hosts_ipv6_leases_follow_its_macs_and_anonymous_leases_stay_out_of_the_index(
        tmp_path):
    """Migration 44: the leases6 row carries the host owning its MAC, set by the store as it
    writes and kept by triggers when MACs are added, moved or removed, so that a client no
    host owns writes no index page for its MAC (the DHCPv6 commit's largest cost). What
    the outside sees stays the same: the host's addresses (`host show`, the agent token
    check, the AAAA record) are the bound leases of its MACs, whenever the MAC was added."""
    db = tmp_path / "nixie.db"
    names = Store(db)
    conn = names.conn()
    store = SqliteLease6Store(db)
    t = time.time()
    a, b, x = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:99"

    def lease(addr, mac):
        store.commit([Lease6Record(addr, "0003" + mac.replace(":", ""), 1, mac, None, "bound",
                                   t, t + 600, t)], [])

    def seen(name):
        h = hosts.get_host(conn, name)
        dns = {r.name: r.ip for r in SqliteBackend(names).name_records()
               if r.ip and ":" in r.ip}
        return (h["ip6_addresses"], sorted(agent.host_addresses(conn, h["id"])), dns.get(name))

    hosts.add_host(conn, "web1", [a], "f")
    lease("fd00:77::1:1", a)  # written after the host: the store fills host_id
    lease("fd00:77::1:2", b)  # nobody's MAC yet
    lease("fd00:77::1:9", x)  # an anonymous client
    assert seen("web1") == (["fd00:77::1:1"], ["fd00:77::1:1"], "fd00:77::1:1")
    indexed = "SELECT address FROM leases6 INDEXED BY leases6_host WHERE host_id IS NOT NULL"
    assert [r[0] for r in conn.execute(indexed)] == ["fd00:77::1:1"]

    hosts.update_host(conn, "web1", macs=[b])  # the MAC moves: the leases follow at once
    assert seen("web1")[:2] == (["fd00:77::1:2"], ["fd00:77::1:2"])
    hosts.add_host(conn, "web2", [a], "f")  # the old MAC now belongs to another host
    assert seen("web2")[:2] == (["fd00:77::1:1"], ["fd00:77::1:1"])
    lease("fd00:77::1:2", b)  # a renewal keeps the host
    store.commit([Lease6Record("fd00:77::1:2", "0003" + b.replace(":", ""), 1, None, None,
                               "bound", t, t + 900, t)], [])  # a relayed renewal without MAC
    assert seen("web1")[:2] == (["fd00:77::1:2"], ["fd00:77::1:2"])
    hosts.remove_host(conn, "web1")  # its MACs go with it (ON DELETE CASCADE)
    assert sorted(r[0] for r in conn.execute(indexed)) == ["fd00:77::1:1"]
    assert conn.execute("SELECT host_id FROM leases6 WHERE address = 'fd00:77::1:2'"
                        ).fetchone()[0] is None  # the lease itself is kept
    store.close()


def test_migration_44_gives_existing_leases_their_host(tmp_path):
    conn = connect(tmp_path / "nixie.db", migrate=False)
    for v in sorted(m for m in MIGRATIONS if m < 44):
        for stmt in _split_sql(MIGRATIONS[v]):
            conn.execute(stmt)
    conn.execute("PRAGMA user_version = 39")
    conn.execute("INSERT INTO hosts (id, name, flake, attr, created_at) VALUES (1, 'web1', 'f', "
                 "'web1', 0)")
    conn.execute("INSERT INTO host_macs VALUES ('52:54:00:00:00:0a', 1)")
    for addr, mac in (("fd00:77::1:1", "52:54:00:00:00:0a"), ("fd00:77::1:9", "52:54:00:00:00:99")):
        conn.execute("INSERT INTO leases6 (address, duid, iaid, mac, state, starts, expires, "
                     "updated_at) VALUES (?, '00', 1, ?, 'bound', 0, 9e9, 0)", (addr, mac))
    assert apply_migrations(conn)[-1] == max(MIGRATIONS)
    assert hosts.addresses6(conn, 1) == ["fd00:77::1:1"]
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = "
                                       "'leases6' AND type = 'index' ORDER BY name")] == [
        "leases6_host", "leases6_state_expires", "sqlite_autoindex_leases6_1"]


def test_commits_of_every_batch_size_write_exactly_their_rows_through_eight_statement_shapes(
        tmp_path):
    """The lease and event INSERTs come in a few fixed shapes (rows padded with NULL rows the
    statement drops), compiled when the store opens, instead of one statement per batch
    size compiled during a fresh server's first leases: what lands on disk is exactly each
    batch's rows and events, in order, for every size up to two statements' worth."""
    store = SqliteLease6Store(tmp_path / "nixie.db")
    inserts: list[str] = []
    store.conn.set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith(
        "INSERT INTO") else None)
    t = 1_800_000_000.25
    expected_leases, expected_events, a = {}, [], 0
    for n in range(1, 140):
        rows, evs = [], []
        for _ in range(n):
            a += 1
            r = Lease6Record(f"fd00:77::{a:x}", f"00030001525400{a:06x}", a, None, None,
                             "bound", t + a, t + a + 600.5, t)
            rows.append(r)
            evs.append(EventRecord("dhcp6.lease", f"{r.address} leased", t + a,
                                   data={"iaid": a}))
        store.commit(rows, evs)
        expected_leases.update({r.address: r for r in rows})
        expected_events += [(e.ts, e.message, json.dumps(e.data)) for e in evs]
    got = {r.address: r for r in store.load_leases6()}
    assert got == expected_leases
    assert [tuple(r) for r in store.conn.execute(
        "SELECT ts, message, data FROM events ORDER BY id")] == expected_events
    shapes = {sql.split(" SELECT")[0] + f" x{sql.count('),(') + 1}" for sql in inserts}
    assert len(shapes) <= 2 * 8, sorted(shapes)  # leases6 and events, 8 row counts each
    store.close()
