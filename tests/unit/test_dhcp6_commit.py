"""The DHCPv6 group commit: a REPLY that binds leaves only once its lease is in SQLite.
When the commit fails (a full disk here, SQLITE_FULL from a capped database), no REPLY
of the batch reaches the client's socket, and the loop's next submit raises so the
supervisor restarts the service from what the database holds."""

from __future__ import annotations

import socket
import time

import pytest

from appliance.domain.lease_store6 import SqliteLease6Store
from netservices.dhcp.server import Committer
from netservices.dhcp6 import codec as c6
from tests.dhcp6_helpers import ia_na, message, new_engine, reply_of

N = 200  # more than a page of rows: the capped database cannot take them


def _wire():
    """A client socket and the server's send, over loopback: what the client receives."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = client.getsockname()[1]
    return client, server, lambda sock, r: sock.sendto(r.payload, ("127.0.0.1", port))


def _received(client) -> list[bytes]:
    out = []
    time.sleep(0.05)
    while True:
        try:
            out.append(client.recv(2048))
        except BlockingIOError:
            return out


def _batch(engine, store, now):
    held = []
    for i in range(N):
        for r in engine.handle(message(c6.SOLICIT, duid=c6.duid_ll(bytes([2, 0, 0, 0, 0, i])),
                                       ias=[ia_na(1)], rapid=True, xid=bytes([0, 0, i])),
                               "fe80::1", now):
            assert r.durable
            held.append((None, r))
    return held


@pytest.mark.parametrize("full", [False, True])
def test_no_reply_leaves_for_a_lease_whose_commit_failed(tmp_path, full):
    store = SqliteLease6Store(tmp_path / "nixie.db")
    client, server, send = _wire()
    committer = Committer(store, lambda _s, r: send(server, r))
    try:
        if full:  # the database may not grow by one page: every lease write fails
            pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
            store.conn.execute(f"PRAGMA max_page_count = {pages}")
        engine = new_engine()
        now = time.time()
        held = _batch(engine, store, now)
        rows, events = engine.take_dirty(now)
        assert len(rows) == N
        committer.submit(rows, events, held)
        committer.drain()
        got = _received(client)
        on_disk = {r.address for r in store.load_leases6()}
        if not full:  # the control: the same batch, written, is answered in full
            assert committer.error is None and len(on_disk) == N
            assert sorted(reply_of(p).xid for p in got) == sorted(bytes([0, 0, i])
                                                                   for i in range(N))
            return
        assert got == [] and on_disk == set()
        assert committer.error is not None and store.not_durable == N
        assert store.disk_trouble() is not None
        with pytest.raises(RuntimeError, match="lease commit failed"):
            committer.submit([], [], [])  # the loop stops here; the supervisor restarts it
    finally:
        committer.close()
        store.close()
        client.close()
        server.close()
