import pytest

from appliance.domain import agent, hosts
from appliance.state import db


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "nixie.db")
    hosts.add_host(c, "web1", ["bc:24:11:00:00:01"], "f", mode="install")
    return c


def test_token_moves_host_and_records_ip(conn):
    h = hosts.get_host(conn, "web1")
    tok = agent.issue_token(conn, h["id"], None, 600)
    assert tok not in str(conn.execute("SELECT * FROM boot_tokens").fetchall()[0][0])  # only the hash
    r = agent.report(conn, tok, "installing", "partitioning", "10.77.0.150")
    assert r == {"host": "web1", "state": "installing", "ip": "10.77.0.150"}
    agent.report(conn, tok, "installed", "", "10.77.0.150")
    h = hosts.get_host(conn, "web1")
    assert h["state"] == "installed" and h["ip"] == "10.77.0.150" and h["mode"] == "local"


def test_wrong_and_expired_tokens_are_refused_and_recorded(conn):
    h = hosts.get_host(conn, "web1")
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, "nope", "booted", "", "10.0.0.9")
    assert e.value.status == 401
    old = agent.issue_token(conn, h["id"], None, 60)
    conn.execute("UPDATE boot_tokens SET expires_at = 0")
    with pytest.raises(agent.AgentRejected):
        agent.report(conn, old, "booted", "", "10.0.0.9")
    kinds = [r[0] for r in conn.execute("SELECT kind FROM events WHERE kind = 'agent.rejected'")]
    assert len(kinds) == 2
    assert hosts.get_host(conn, "web1")["state"] == "unknown"


def test_bad_event_and_transition(conn):
    h = hosts.get_host(conn, "web1")
    tok = agent.issue_token(conn, h["id"], None, 600)
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, "exploded", "", None)
    assert e.value.status == 400
    with pytest.raises(agent.AgentRejected) as e:
        agent.report(conn, tok, "installed", "", None)  # never started installing
    assert e.value.status == 409
