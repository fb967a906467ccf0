"""Nix store garbage collection of what the router no longer keeps, with the real `nix`:
after a generation is dropped (beyond builder.keep_generations) and a host is removed,
`nixie gc` deletes their systems from the store, and every path the current generations
use stays (checked with `nix-store --check-validity` and the store directory)."""

from __future__ import annotations

import json
import os
import uuid

from appliance.domain import builds, hosts
from appliance.nix.buildworker import claim_next
from appliance.nix.command import Nix
from lab import flake as labflake
from tests.conftest import run_nixie
from tests.nixlab import build_worker, lab_config


def build(store, worker, host) -> dict:
    conn = store.conn()
    b = builds.enqueue(conn, host)
    claimed = claim_next(conn)
    worker.build_one(conn, claimed)
    got = builds.get_build(conn, b["id"])
    assert got["status"] == "succeeded", got["error"]
    return got


def valid(nix: Nix, paths) -> set[str]:
    invalid = set(nix.run(["nix-store", "--check-validity", "--print-invalid", *paths]).split())
    return set(paths) - invalid


def test_gc_deletes_dropped_generations_and_keeps_the_current_ones(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"gc-test {uuid.uuid4()}")
    cfg_path, cfg = lab_config(tmp_path, keep_generations=1)
    store, worker = build_worker(cfg)
    nix = Nix.from_config(cfg)
    conn = store.conn()
    hosts.add_host(conn, "demo", ["52:54:00:5e:00:01"], str(flake), None, "netboot")
    hosts.add_host(conn, "demo2", ["52:54:00:5e:00:02"], str(flake), None, "netboot")

    first = build(store, worker, "demo")["toplevel"]
    other = build(store, worker, "demo2")["toplevel"]
    labflake.set_release(flake, f"gc-test second {uuid.uuid4()}")
    current = build(store, worker, "demo")["toplevel"]
    assert current != first
    current_closure = set(nix.run(["nix-store", "-qR", current]).split())
    assert first in valid(nix, [first])  # dropped (keep 1), but still in the store
    assert conn.execute("SELECT count(*) FROM generations").fetchone()[0] == 2

    # demo2 removed: its generation goes with it, its GC root stays on disk until the GC
    assert run_nixie("host", "remove", "demo2", config=cfg_path).returncode == 0
    assert any(p.name.startswith("demo2-build-") for p in worker.root_dir.iterdir())

    r = run_nixie("gc", "--json", config=cfg_path, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["error"] is None
    assert first in res["deleted"] and other in res["deleted"]
    assert res["freed_bytes"] > 0
    assert [n for n in res["roots_dropped"] if n.startswith("demo2-build-")]
    # gone from the store, by Nix's database and on disk
    assert valid(nix, [first, other]) == set()
    assert not os.path.lexists(first) and not os.path.lexists(other)
    # the current generation's whole closure stays (the kernel and initrd it shares too)
    assert valid(nix, sorted(current_closure)) == current_closure
    assert not set(res["deleted"]) & current_closure
    for m in ("kernel", "initrd", "init"):
        assert os.path.exists(f"{current}/{m}")
    # what the GC did is an event and shown by the CLI
    ev = json.loads(run_nixie("events", "--kind", "gc.done", "--json", config=cfg_path).stdout)
    assert ev and ev[0]["data"]["deleted"] == len(res["deleted"])

    # nothing left to do: a second run deletes nothing and the current system stays
    again = json.loads(run_nixie("gc", "--json", config=cfg_path, timeout=300).stdout)
    assert again["deleted"] == [] and again["candidates"] == 0
    assert valid(nix, [current]) == {current}
