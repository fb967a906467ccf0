"""`network.begin(..., apply_delay=)`, what the web UI uses so its answer (the page with
the countdown) leaves before the kernel changes: the change is a pending transaction at
once and reaches the kernel a moment later, also when confirmed in that moment; reverted
in that moment, it never reaches the kernel."""

from __future__ import annotations

import time

from appliance.router import network
from appliance.state.db import Store
from tests.unit.test_network import FakeKernel, settings

CHANGE = ["addr_del lan0 10.77.0.1/24", "addr_add lan0 10.88.0.1/24"]


def wait_applied(k: FakeKernel, n: int) -> list:
    deadline = time.monotonic() + 10
    while len(k.applied) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return k.applied


def test_confirmed_before_the_delayed_apply_is_applied(state_dir):
    conn = Store(state_dir / "nixie.db").conn()
    k = FakeKernel()
    txn = network.begin(conn, k, settings(lan_address="10.88.0.1/24"), 30, timer=False,
                        apply_delay=0.3)
    assert txn["state"] == "pending" and txn["ops"] == CHANGE
    network.confirm(conn, txn["id"])
    assert wait_applied(k, 1) == [CHANGE]
    assert network.get_transaction(conn, txn["id"])["state"] == "confirmed"


def test_reverted_before_the_delayed_apply_never_reaches_the_kernel(state_dir):
    conn = Store(state_dir / "nixie.db").conn()
    k = FakeKernel()
    txn = network.begin(conn, k, settings(lan_address="10.88.0.1/24"), 30, timer=False,
                        apply_delay=0.3)
    network.rollback(conn, k, txn["id"])
    assert k.applied == [[]]  # the rollback: nothing to undo
    time.sleep(0.6)  # past the delay: the thread saw the rollback and left the kernel alone
    assert k.applied == [[]]
    assert network.get_transaction(conn, txn["id"])["state"] == "rolled_back"
