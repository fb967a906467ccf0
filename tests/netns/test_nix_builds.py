"""Flakes to generations to netboot images, with the real `nix` CLI.

One lab flake per module (the build is the slow part); each test builds on
the state the previous ones left, in file order, like an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid

import pytest

from appliance.domain import builds, flakes, hosts
from appliance.nix.bootartifacts import StoreBootArtifacts
from appliance.nix.buildworker import BuildWorker, claim_next
from appliance.nix.command import Nix
from appliance.nix.flake_eval import refresh_flake
from appliance.nix.netboot import read_artifact, split_zstd_frames
from appliance.state.db import Store
from lab import flake as labflake
from netservices.backend import HostRecord
from tests.nixlab import build_worker, lab_config


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nixlab")
    # a release text no earlier run used, so the toplevels really get built
    flake_dir = labflake.materialise(tmp / "flake", release=f"module-test {uuid.uuid4()}")
    cfg_path, cfg = lab_config(tmp, keep_generations=3)
    store, worker = build_worker(cfg)
    ba = StoreBootArtifacts(cfg, store)
    try:
        yield {"dir": flake_dir, "cfg": cfg, "cfg_path": cfg_path, "store": store,
               "worker": worker, "ba": ba, "nix": Nix.from_config(cfg)}
    finally:
        ba.close()


def run_build(lab, host="demo") -> dict:
    conn = lab["store"].conn()
    b = builds.enqueue(conn, host)
    claimed = claim_next(conn)
    assert claimed["id"] == b["id"]
    lab["worker"].build_one(conn, claimed)
    return builds.get_build(conn, b["id"])


def host_record(conn, name) -> HostRecord:
    h = hosts.get_host(conn, name)
    return HostRecord(name=h["name"], id=h["id"], macs=tuple(h["macs"]), mode=h["mode"])


def closure(lab, toplevel) -> list[str]:
    return sorted(lab["nix"].run(["nix-store", "-qR", toplevel]).split())


def test_flake_add_lists_hosts_and_keeps_listing_when_broken(lab):
    conn = lab["store"].conn()
    url = str(lab["dir"])
    f = flakes.add_flake(conn, url)
    r = refresh_flake(conn, lab["nix"], f["id"])
    assert r["configurations"] == ["demo", "demo2"]
    assert r["last_error"] is None and r["locked_url"].startswith("git+file://")
    assert r["macs"] == {"demo": ["52:54:00:5e:00:01"], "demo2": ["52:54:00:5e:00:02"]}
    labflake.break_flake(lab["dir"])
    try:
        r = refresh_flake(conn, lab["nix"], f["id"])
        assert r["configurations"] == ["demo", "demo2"]  # the last good listing stays
        assert "error:" in r["last_error"] and "flake.nix" in r["last_error"]
    finally:
        labflake.repair_flake(lab["dir"])
    r = refresh_flake(conn, lab["nix"], f["id"])
    assert r["last_error"] is None


def test_build_makes_a_generation_with_a_gc_root_log_and_progress(lab):
    conn = lab["store"].conn()
    hosts.add_host(conn, "demo", ["52:54:00:5e:00:01"], str(lab["dir"]), None, "netboot")
    b = run_build(lab)
    assert b["status"] == "succeeded", b["error"]
    top = b["toplevel"]
    assert top.startswith("/nix/store/") and top.endswith("-nixos-system-demo")
    assert b["locked_url"].startswith("git+file://") and "rev=" in b["locked_url"]
    assert b["started_at"] <= b["finished_at"]
    log_text = open(b["log_path"]).read()
    assert "nix build" in log_text
    progress = json.loads(b["progress"])
    assert progress["builds_done"] >= 1 and progress["builds_done"] == progress["builds_expected"]
    h = hosts.get_host(conn, "demo")
    assert h["current_generation"] == 1
    gen = conn.execute("SELECT * FROM generations WHERE host_id = ?", (h["id"],)).fetchone()
    assert gen["toplevel"] == top and os.readlink(gen["gc_root"]) == top
    roots = lab["nix"].run(["nix-store", "-q", "--roots", top])
    assert gen["gc_root"] in roots  # registered with Nix, not just a symlink
    for m in ("kernel", "initrd", "init", "kernel-params"):
        assert os.path.exists(f"{top}/{m}")


def test_broken_flake_fails_with_nix_error_and_keeps_the_generation(lab):
    conn = lab["store"].conn()
    before = hosts.get_host(conn, "demo")["current_generation"]
    labflake.break_flake(lab["dir"])
    try:
        b = run_build(lab)
    finally:
        labflake.repair_flake(lab["dir"])
    assert b["status"] == "failed"
    assert b["error"].startswith("error:") and "flake.nix" in b["error"]
    assert hosts.get_host(conn, "demo")["current_generation"] == before
    ba = lab["ba"]
    targets = ba.boot_targets(host_record(conn, "demo"))
    assert [t.number for t in targets] == [before]


def _unpack_image(data: bytes, stage1_len: int, dest) -> list[str]:
    names = []
    for frame in split_zstd_frames(data[stage1_len:]):
        listing = subprocess.run(["busybox", "cpio", "-t"], input=frame, capture_output=True,
                                 check=True).stdout.decode().split()
        names += listing
        subprocess.run(["busybox", "cpio", "-i", "-d"], input=frame, cwd=dest, check=True,
                       capture_output=True)
    return names


def test_image_unpacks_to_exactly_the_closure(lab, tmp_path):
    conn = lab["store"].conn()
    ba = lab["ba"]
    target = ba.boot_targets(host_record(conn, "demo"))[0]
    assert target.kernel_params == ("console=ttyS0", "panic=-1")
    art = ba.artifact(target.toplevel, "initrd")
    assert art.size == sum(s.length for s in art.segments)
    stage1 = os.path.realpath(f"{target.toplevel}/initrd")
    assert art.segments[0].path == stage1
    data = read_artifact(art)
    assert len(data) == art.size
    assert data[:os.path.getsize(stage1)] == open(stage1, "rb").read()
    out = tmp_path / "root"
    out.mkdir()
    names = _unpack_image(data, os.path.getsize(stage1), out)
    assert names[:2] == ["nix", "nix/store"]  # parents first, as the kernel needs
    tops = {"/" + n for n in names if n.count("/") == 2 and n.startswith("nix/store/")}
    assert sorted(tops) == closure(lab, target.toplevel)
    for p in closure(lab, target.toplevel):
        r = subprocess.run(["diff", "-r", "--no-dereference", p, f"{out}{p}"], capture_output=True)
        assert r.returncode == 0, r.stdout
    # the registration loads into a fresh Nix store
    reg = (out / "nix/.nix-netboot-serve-db/registration").read_text()
    assert reg.split("\n")[0] in closure(lab, target.toplevel)
    fresh = tmp_path / "fresh"
    r = subprocess.run(["nix-store", "--store", f"local?root={fresh}", "--load-db"], input=reg,
                       capture_output=True, text=True, env=lab["nix"].env())
    assert r.returncode == 0, r.stderr
    valid = subprocess.run(["nix-store", "--store", f"local?root={fresh}", "-q", "--references",
                            target.toplevel], capture_output=True, text=True, env=lab["nix"].env())
    assert valid.returncode == 0, valid.stderr
    assert set(valid.stdout.split()) <= set(closure(lab, target.toplevel))
    kernel = ba.artifact(target.toplevel, "kernel")
    assert kernel.segments[0].path == os.path.realpath(f"{target.toplevel}/kernel")


def test_one_changed_file_rebuilds_only_that_paths_archive(lab):
    conn = lab["store"].conn()
    ba = lab["ba"]
    old = ba.boot_targets(host_record(conn, "demo"))[0].toplevel
    ba.artifact(old, "initrd")
    built_before = sum(ba.images.cache.built.values())
    labflake.set_release(lab["dir"], f"module-test {uuid.uuid4()}")
    b = run_build(lab)
    assert b["status"] == "succeeded", b["error"]
    new = b["toplevel"]
    changed = set(closure(lab, new)) - set(closure(lab, old))
    assert changed == {new}  # the knob changes exactly one store path
    ba.artifact(new, "initrd")
    built = sum(ba.images.cache.built.values()) - built_before
    assert built == 1
    assert ba.images.cache.built[os.path.basename(new)] == 1
    assert hosts.get_host(conn, "demo")["current_generation"] == 2


def test_racing_builds_never_serve_a_mix(lab, tmp_path):
    """Two builds of one host finish while boots are served: each boot gets
    exactly the toplevel its script named, kernel and initrd alike."""
    conn = lab["store"].conn()
    ba = lab["ba"]
    host = host_record(conn, "demo")
    seen: set[tuple[str, frozenset[str]]] = set()
    errors: list[BaseException] = []
    stop = threading.Event()
    boots = [0]  # boots served so far

    def booter():
        try:
            while not stop.is_set():
                t = ba.boot_targets(host)[0]  # what the boot script names now
                art = ba.artifact(t.toplevel, "initrd")
                names = frozenset(os.path.basename(s.path).removesuffix(".cpio.zst")
                                  for s in art.segments[2:])
                seen.add((t.toplevel, names))
                boots[0] += 1
                stop.wait(0.01)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=booter)
    t.start()
    try:
        # two revisions of the host's flake queued back to back (a clone
        # stands for the second push)
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", str(lab["dir"]), str(clone)], check=True)
        labflake.set_release(lab["dir"], f"race A {uuid.uuid4()}")
        labflake.set_release(clone, f"race B {uuid.uuid4()}")
        a = builds.enqueue(conn, "demo")
        hosts.update_host(conn, "demo", flake=str(clone))
        b = builds.enqueue(conn, "demo")
        hosts.update_host(conn, "demo", flake=str(lab["dir"]))
        worker = BuildWorker(lab["cfg"], lab["store"])
        stop_worker = threading.Event()
        threads = []
        for _ in range(2):
            c = lab["store"].new_connection()
            job = claim_next(c)
            threads.append(threading.Thread(target=worker.build_one, args=(c, job, stop_worker)))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # boots go on after the switch too: the one in progress now may have begun
        # before it (the first boot waits for its initrd's CPIO cache), the next did not
        after, deadline = boots[0], time.monotonic() + 120
        while boots[0] < after + 2 and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    ra, rb = builds.get_build(conn, a["id"]), builds.get_build(conn, b["id"])
    assert ra["status"] == rb["status"] == "succeeded"
    # both locked different revisions, so both toplevels differ
    assert ra["toplevel"] != rb["toplevel"]
    numbers = [g.number for g in ba.boot_targets(host)]
    assert numbers[:2] == [4, 3] and len(numbers) == 3  # keep_generations = 3
    assert len({top for top, _ in seen}) >= 2  # boots were served across the switch
    for top, names in sorted(seen) + [(ra["toplevel"], None), (rb["toplevel"], None)]:
        art = ba.artifact(top, "initrd")
        got = {os.path.basename(s.path).removesuffix(".cpio.zst") for s in art.segments[2:]}
        want = {os.path.basename(p) for p in closure(lab, top)}
        assert got == want, top
        if names is not None:
            assert names == want
        assert art.segments[0].path == os.path.realpath(f"{top}/initrd")
        assert ba.artifact(top, "kernel").segments[0].path == os.path.realpath(f"{top}/kernel")
    # generation 1 was dropped with its GC root
    roots = sorted(os.listdir(lab["cfg"].state_dir + "/gcroots"))
    gens = conn.execute("SELECT gc_root FROM generations").fetchall()
    assert sorted(os.path.basename(g["gc_root"]) for g in gens) == [
        r for r in roots if "-build-" in r]


def test_dispatch_kinds_closure_and_profile(lab, tmp_path):
    conn = lab["store"].conn()
    ba = lab["ba"]
    top = ba.boot_targets(host_record(conn, "demo"))[0].toplevel
    t = ba.resolve("closure", [os.path.basename(top)])
    assert t.toplevel == top and t.kernel_params
    with pytest.raises(LookupError):
        ba.resolve("closure", ["../../etc"])
    with pytest.raises(LookupError):
        ba.resolve("closure", ["0" * 32 + "-missing"])
    busybox = [p for p in closure(lab, top) if p.endswith("-busybox")][0]
    with pytest.raises(LookupError):  # in the store, but not a system
        ba.resolve("closure", [os.path.basename(busybox)])
    ba.profiles_dir.mkdir(parents=True, exist_ok=True)
    link = ba.profiles_dir / "lab"
    link.symlink_to(top)
    assert ba.resolve("profile", ["lab"]).toplevel == top
    other = [g for g in ba.boot_targets(host_record(conn, "demo"))][-1].toplevel
    link.unlink()
    link.symlink_to(other)  # re-pointed: the next boot follows it
    assert ba.resolve("profile", ["lab"]).toplevel == other
    for bad in ("../x", ".hidden", "no such"):
        with pytest.raises(LookupError):
            ba.resolve("profile", [bad])
    with pytest.raises(LookupError):
        ba.resolve("profile", ["missing"])


def test_service_refreshes_flakes_on_schedule_and_takes_queued_builds(tmp_path):
    """The supervised service itself: its refresh timer and its worker threads."""
    flake = labflake.materialise(tmp_path / "flake", release=f"service-test {uuid.uuid4()}")
    _path, cfg = lab_config(tmp_path, flake_refresh_seconds=1, max_jobs=2)
    store = Store(cfg.db_path)
    conn = store.conn()
    f = flakes.add_flake(conn, str(flake), policy="manual")  # only the queued builds run
    hosts.add_host(conn, "demo", ["52:54:00:5e:00:01"], str(flake), None, "netboot")
    hosts.add_host(conn, "demo2", ["52:54:00:5e:00:02"], str(flake), None, "netboot")
    queued = [builds.enqueue(conn, "demo"), builds.enqueue(conn, "demo2")]
    worker = BuildWorker(cfg, store)
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,))
    t.start()
    try:
        done = [builds.wait(conn, b["id"], timeout=120) for b in queued]
        # adding the flake queued its first evaluation; the schedule (every 1 s) must
        # evaluate it again after that
        deadline = time.monotonic() + 30
        while flakes.get_flake(conn, f["url"])["last_refresh"] is None:
            assert time.monotonic() < deadline, "the added flake was not evaluated"
            time.sleep(0.2)
        first = flakes.get_flake(conn, f["url"])["last_refresh"]
        while flakes.get_flake(conn, f["url"])["last_refresh"] == first:
            assert time.monotonic() < deadline, "no scheduled refresh"
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive()
    assert [b["status"] for b in done] == ["succeeded", "succeeded"], [b["error"] for b in done]
    assert flakes.get_flake(conn, f["url"])["configurations"] == ["demo", "demo2"]
    assert worker.stats()["succeeded"] == 2 and worker.stats()["refreshes"] >= 1
    assert {hosts.get_host(conn, n)["current_generation"] for n in ("demo", "demo2")} == {1}
