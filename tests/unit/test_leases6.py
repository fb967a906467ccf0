"""DHCPv6 bindings in the state DB: the lease store's durable commit and reload, the
ULA made once, and `nixie lease list` showing IPv6 leases next to IPv4 ones."""

from __future__ import annotations

import json
import time

from appliance.domain.ipv6 import generate_ula, lan_address6, server_duid6
from appliance.domain.lease_store6 import SqliteLease6Store
from appliance.state.db import connect
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
