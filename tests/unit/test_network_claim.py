"""A pending network change is rolled back by exactly one of its watchdogs."""

import threading

from appliance.router import network
from appliance.state import db


def _pending(conn, txn_id="t1"):
    conn.execute("INSERT INTO net_transactions (id, state, created_at, deadline, before, desired, ops) "
                 "VALUES (?, 'pending', 0, 0, '{}', '{}', '[]')", (txn_id,))


def test_only_one_runner_claims(tmp_path):
    path = tmp_path / "nixie.db"
    db.connect(path).close()
    _pending(db.connect(path))
    results = []
    barrier = threading.Barrier(6)

    def runner():
        conn = db.connect(path, migrate=False)
        barrier.wait()
        results.append(network.claim_rollback(conn, "t1"))

    threads = [threading.Thread(target=runner) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def test_stale_claim_is_taken_over(tmp_path):
    conn = db.connect(tmp_path / "nixie.db")
    _pending(conn)
    assert network.claim_rollback(conn, "t1")
    assert not network.claim_rollback(conn, "t1")  # in progress elsewhere
    conn.execute("UPDATE net_transactions SET claimed_at = claimed_at - ?",
                 (network.STALE_CLAIM_SECONDS + 1,))
    assert network.claim_rollback(conn, "t1")  # its runner died mid-rollback
    conn.execute("UPDATE net_transactions SET state = 'rolled_back'")
    assert not network.claim_rollback(conn, "t1")
