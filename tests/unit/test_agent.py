"""Agent tokens: bound to the boot they were issued for (host, generation, purpose, the
address that fetched the script), forward only, short-lived after use (issue 15, finding 1).
The HTTP-level attacks are in test_agent_tokens.py (in-process) and
tests/netns/test_agent_tokens.py (the real server)."""

import pytest

from appliance.domain import agent, hosts
from appliance.state import db
from tests.dhcp6_helpers import put_lease6

HOST_IP = "10.77.0.150"


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "nixie.db")
    hosts.add_host(c, "web1", ["bc:24:11:00:00:01"], "f", mode="install")
    return c


def lease(conn, ip, mac="bc:24:11:00:00:01", state="bound", expires=9e9):
    conn.execute("INSERT OR REPLACE INTO leases (ip, mac, state, starts, expires, updated_at) "
                 "VALUES (?, ?, ?, 0, ?, 0)", (ip, mac, state, expires))


def state_of(conn):
    return hosts.get_host(conn, "web1")["state"]


def issue(conn, purpose="install", ip=HOST_IP, gen=None, **kw):
    h = hosts.get_host(conn, "web1")
    return agent.issue_token(conn, h["id"], gen, client_ip=ip, purpose=purpose, **kw)


def test_token_moves_host_and_records_ip(conn):
    tok = issue(conn)
    assert tok not in str(conn.execute("SELECT * FROM boot_tokens").fetchall()[0][0])  # only the hash
    r = agent.report(conn, tok, "installing", "partitioning", HOST_IP)
    assert r == {"host": "web1", "state": "installing", "ip": HOST_IP}
    agent.report(conn, tok, "installing", "copying the closure", HOST_IP)  # one per step
    agent.report(conn, tok, "installed", "", HOST_IP)
    h = hosts.get_host(conn, "web1")
    assert h["state"] == "installed" and h["ip"] == HOST_IP and h["mode"] == "local"


def test_wrong_and_expired_tokens_are_refused_and_recorded(conn, monkeypatch):
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, "nope", "booted", "", "10.0.0.9")
    assert e.value.status == 401
    old = issue(conn, "netboot", ttl_seconds=60)
    real_now = agent.now()
    monkeypatch.setattr(agent, "now", lambda: real_now + 61)
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, old, "booted", "", HOST_IP)
    assert e.value.status == 401
    kinds = [r[0] for r in conn.execute("SELECT kind FROM events WHERE kind = 'agent.rejected'")]
    assert len(kinds) == 2
    assert state_of(conn) == "unknown"


def test_bad_event_and_transition(conn):
    tok = issue(conn)
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, "exploded", "", HOST_IP)
    assert e.value.status == 400
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, "installed", "", HOST_IP)  # never started installing
    assert e.value.status == 409
    assert state_of(conn) == "unknown"


def test_a_token_is_valid_only_from_the_address_it_was_issued_to(conn):
    tok = issue(conn, "netboot")
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, "booted", "", "10.77.0.66")
    assert e.value.status == 403 and "10.77.0.66" in str(e.value)
    assert state_of(conn) == "unknown"
    rejected = conn.execute("SELECT ip, host_id FROM events WHERE kind = 'agent.rejected'").fetchone()
    assert tuple(rejected) == ("10.77.0.66", hosts.get_host(conn, "web1")["id"])
    with pytest.raises(agent.AgentRejected):
        agent.report(conn, tok, "booted", "", None)
    assert agent.report(conn, tok, "booted", "", HOST_IP)["state"] == "booted"


def test_the_booted_system_may_report_from_another_lease_of_its_macs(conn):
    # iPXE fetched the script from .150; the booted system's DHCP client got .151
    lease(conn, HOST_IP)
    tok = issue(conn, "netboot")
    lease(conn, "10.77.0.151")
    lease(conn, "10.77.0.152", mac="bc:24:11:00:00:99")  # somebody else's lease
    lease(conn, "10.77.0.153", expires=1)  # an expired one of the host's
    for ip in ("10.77.0.152", "10.77.0.153"):
        with pytest.raises(agent.AgentRejected) as e:
            agent.report(conn, tok, "booted", "", ip)
        assert e.value.status == 403
    assert agent.report(conn, tok, "booted", "", "10.77.0.151")["ip"] == "10.77.0.151"


def test_no_token_for_an_address_that_is_not_the_hosts(conn):
    lease(conn, HOST_IP)
    mine = issue(conn, "netboot")
    assert issue(conn, "netboot", ip="10.77.0.66") is None
    # the attacker's fetch replaced nothing: the host's token still works
    assert agent.report(conn, mine, "booted", "", HOST_IP)["state"] == "booted"
    # a reservation is the host's address too
    conn.execute("UPDATE hosts SET ip_reservation = '10.77.0.20'")
    assert issue(conn, "netboot", ip="10.77.0.20") is not None
    assert issue(conn, "netboot", ip="") is None


def test_one_outstanding_token_per_host_and_generation(conn):
    h = hosts.get_host(conn, "web1")
    for number in (1, 2):
        conn.execute("INSERT INTO generations (host_id, number, toplevel, created_at) "
                     "VALUES (?, ?, '/nix/store/x', 0)", (h["id"], number))
    gens = [r[0] for r in conn.execute("SELECT id FROM generations ORDER BY id")]
    tokens = [issue(conn, "netboot", gen=g) for _ in range(200) for g in gens]
    rows = conn.execute("SELECT generation_id, count(*) FROM boot_tokens GROUP BY 1").fetchall()
    assert sorted(tuple(r) for r in rows) == [(gens[0], 1), (gens[1], 1)]
    # only the last of each generation is live
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tokens[0], "booted", "", HOST_IP)
    assert e.value.status == 401
    assert agent.report(conn, tokens[-1], "booted", "", HOST_IP)["state"] == "booted"


@pytest.mark.parametrize("purpose, first, then", [
    ("netboot", "booted", "installing"),   # booted -> installing: backwards for this boot
    ("install", "installing", "booted"),   # an install boot never reports booted
    ("install", "failed", "installing"),
    ("netboot", "failed", "booted"),
])
def test_a_token_moves_the_host_only_forward(conn, purpose, first, then):
    tok = issue(conn, purpose)
    agent.report(conn, tok, first, "", HOST_IP)
    before = hosts.get_host(conn, "web1")
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, then, "", HOST_IP)
    assert e.value.status == 409
    after = hosts.get_host(conn, "web1")
    assert (after["state"], after["mode"], after["state_changed_at"]) == (
        before["state"], before["mode"], before["state_changed_at"]) == (
        first, "install", before["state_changed_at"])


def test_a_netboot_token_cannot_flip_an_install_host_to_local(conn):
    tok = issue(conn, "netboot")
    for event in ("installing", "installed"):
        with pytest.raises(agent.AgentRejected) as e:
            agent.report(conn, tok, event, "", HOST_IP)
        assert e.value.status == 409
    assert hosts.get_host(conn, "web1")["mode"] == "install"


def test_a_used_token_expires_soon_and_a_retry_moves_nothing(conn, monkeypatch):
    tok = issue(conn, "netboot", ttl_seconds=3600, used_ttl_seconds=120)
    t0 = agent.now()
    assert agent.report(conn, tok, "booted", "", HOST_IP)["state"] == "booted"
    # the host starts another boot meanwhile; a retry of the old report moves nothing
    hosts.set_state(conn, hosts.get_host(conn, "web1")["id"], "installing")
    assert agent.report(conn, tok, "booted", "", HOST_IP)["repeated"] is True
    assert state_of(conn) == "installing"
    monkeypatch.setattr(agent, "now", lambda: t0 + 121)
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, "failed", "", HOST_IP)
    assert e.value.status == 401
    assert state_of(conn) == "installing"


def test_install_steps_keep_the_token_alive_for_the_next(conn, monkeypatch):
    tok = issue(conn, "install", ttl_seconds=600, used_ttl_seconds=60)
    t0 = agent.now()
    for k in range(1, 4):  # each step re-arms the issue lifetime
        monkeypatch.setattr(agent, "now", lambda k=k: t0 + 500 * k)
        agent.report(conn, tok, "installing", f"step {k}", HOST_IP)
    monkeypatch.setattr(agent, "now", lambda: t0 + 2000)
    assert agent.report(conn, tok, "installed", "", HOST_IP)["state"] == "installed"
    monkeypatch.setattr(agent, "now", lambda: t0 + 2061)
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, "installed", "", HOST_IP)
    assert e.value.status == 401


# the SLAAC address bc:24:11:00:00:01 makes in fd00:77::/64 (modified EUI-64)
SLAAC = "fd00:77::be24:11ff:fe00:1"


def test_ipv6_boot_a_token_from_the_dhcpv6_lease_reported_from_the_slaac_address(conn):
    """Issue 16: iPXE fetched the script from its DHCPv6 address; the booted system
    reports from the address SLAAC made from its MAC. Both are the host's; another
    machine's DHCPv6 lease or SLAAC address is not. The host's IPv6 address is kept in
    `ip6` (its IPv4 `ip` untouched)."""
    put_lease6(conn, "fd00:77::1:5", "bc:24:11:00:00:01")
    put_lease6(conn, "fd00:77::1:6", "bc:24:11:00:00:99")
    assert agent.eui64_interface_id("bc:24:11:00:00:01") == 0xbe2411fffe000001
    assert issue(conn, "netboot", ip="fd00:77::1:6") is None  # somebody else's lease
    assert issue(conn, "netboot", ip="fd00:77::be24:11ff:fe00:99") is None  # another MAC's
    tok = issue(conn, "netboot", ip="fd00:77::1:5")
    for ip in ("fd00:77::1:6", "fd00:77::be24:11ff:fe00:99", "::ffff:10.77.0.9"):
        with pytest.raises(agent.AgentRejected) as e:
            agent.report(conn, tok, "booted", "", ip)
        assert e.value.status == 403
    assert agent.report(conn, tok, "booted", "", SLAAC)["state"] == "booted"
    h = hosts.get_host(conn, "web1")
    assert h["ip6"] == SLAAC and h["ip"] is None


def test_ipv6_boot_without_a_lease_binds_the_token_to_the_slaac_address(conn):
    lease(conn, HOST_IP)  # the host also holds an IPv4 lease: its SLAAC address is still its own
    tok = issue(conn, "netboot", ip=SLAAC)
    assert tok is not None
    agent.report(conn, tok, "booted", "", SLAAC)
    assert hosts.get_host(conn, "web1")["ip6"] == SLAAC
    assert hosts.split_family("::ffff:10.77.0.9") == ("10.77.0.9", None)
    assert hosts.split_family("fd00::1") == (None, "fd00::1")
