"""Cached netboot (issue 17 item 4), router side: the closure listing and the per-path
archives a host with /nix/store on its disk fetches, the stage-1-only initrd, the script of
a host in mode `cached`, and what hostile requests get. Real HTTP boot app, real CPIO cache
over a store on disk, archives unpacked with busybox cpio (what the lab's stage 1 runs)."""

from __future__ import annotations

import http.client
import os
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.domain import agent, hosts
from appliance.domain.boot_backend import SqliteBackend
from appliance.nix.bootartifacts import StoreBootArtifacts
from appliance.nix.netboot import MEMBER_TOPLEVELS, CpioCache, ImageBuilder, PathArchives
from appliance.state import db
from appliance.state.db import Store
from appliance.state.migrations import MIGRATIONS
from netservices.backend import BootArtifacts
from netservices.httpboot import BootSettings, create_boot_app, make_server
from netservices.httpboot.app import NoArtifacts
from tests.bootlab import SpecBackend
from tests.golden import assert_golden
from tests.unit.test_httpboot import BASE, call

pytestmark = pytest.mark.unit

MAC = "52:54:00:aa:bb:09"
KEY = "nixie-router-1:3sF9Xw0aQ1e+c2m/5Pz0nVQe4kq9rQ0N4y2cVv7m0kU="


class CachedBackend(SpecBackend):
    """SpecBackend plus cached netboot over PathArchives on a store in a temporary dir
    (the app names toplevels /nix/store/<basename>; this maps them there)."""

    def __init__(self, spec, paths: PathArchives):
        super().__init__(spec)
        self.paths = paths

    def _local(self, toplevel: str) -> str:
        return f"{self.paths.store_dir}/{toplevel.rsplit('/', 1)[-1]}"

    def artifact(self, toplevel, name):
        if name == "stage1":
            return self.paths.images.stage1(self._local(toplevel))
        return super().artifact(toplevel, name)

    def closure_listing(self, toplevel):
        if not os.path.isdir(self._local(toplevel)):
            return None
        return self.paths.listing(self._local(toplevel))

    def path_artifact(self, toplevel, basename):
        if not os.path.isdir(self._local(toplevel)):
            return None
        return self.paths.archive(self._local(toplevel), basename)


def _path(store: Path, name: str, files: dict[str, bytes]) -> Path:
    p = store / name
    p.mkdir()
    for rel, data in files.items():
        (p / rel).parent.mkdir(parents=True, exist_ok=True)
        (p / rel).write_bytes(data)
    return p


@pytest.fixture
def cached(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    kernel = _path(store, "1" * 32 + "-linux", {"bzImage": os.urandom(40_000)})
    stage1 = _path(store, "2" * 32 + "-initrd-stage1", {"initrd": os.urandom(9_000)})
    big = _path(store, "3" * 32 + "-busybox", {"bin/busybox": os.urandom(120_000)})
    os.symlink("busybox", big / "bin" / "sh")
    outside = _path(store, "4" * 32 + "-secret", {"key": b"not in any closure"})
    top = _path(store, "z" * 32 + "-nixos-system-c1", {"init": b"#!/bin/sh\n"})
    (top / "kernel").symlink_to(kernel / "bzImage")
    (top / "initrd").symlink_to(stage1 / "initrd")
    closure = sorted(str(p) for p in (kernel, stage1, big, top))
    cache = CpioCache(tmp_path / "plain", store_dir=str(store), workers=2, compress=False)
    images = ImageBuilder(CpioCache(tmp_path / "zst", store_dir=str(store), workers=1),
                          closure=lambda t: closure if t == str(top) else [t],
                          dump_db=lambda ps: b"")
    paths = PathArchives(images, cache)
    spec = {"hosts": [{"name": "c1", "id": 7, "macs": [MAC], "mode": "cached",
                       "targets": [top.name]}],
            "systems": {top.name: {"label": "generation 1", "kernel": str(kernel / "bzImage"),
                                   "initrd": [str(stage1 / "initrd")], "params": ["console=ttyS0"]}}}
    backend = CachedBackend(spec, paths)

    def make(**kw):
        s = BootSettings(BASE, **{"menu": False, "retry_seconds": 4, **kw})
        return create_boot_app(hosts=backend, events=backend, artifacts=backend, agent=backend,
                               settings=s, tftp_root=str(tmp_path))

    yield {"make": make, "backend": backend, "store": store, "top": top, "closure": closure,
           "outside": outside, "cache": cache, "big": big}
    cache.close()
    images.cache.close()


def _listing(app, top: Path) -> list[tuple[str, int]]:
    status, headers, body = call(app, f"/boot/{top.name}/closure")
    assert status == 200, body
    return [(b, int(n)) for b, n in (line.split() for line in body.decode().splitlines())]


def test_listing_names_every_closure_path_with_its_archive_size_toplevel_last(cached):
    app = cached["make"]()
    listing = _listing(app, cached["top"])
    assert [b for b, _ in listing] == sorted(os.path.basename(p) for p in cached["closure"]
                                              if p != str(cached["top"])) + [cached["top"].name]
    for b, n in listing:
        assert n == os.path.getsize(cached["cache"].dir / f"{b}.cpio")
    ev = [e for e in cached["backend"].events if e["kind"] == "boot.closure"]
    assert ev[-1]["data"]["paths"] == 4 and ev[-1]["data"]["bytes"] == sum(n for _, n in listing)


def test_each_path_archive_unpacks_with_busybox_to_the_store_path(cached, tmp_path):
    """The bytes a stage 1 gets, unpacked as it does (`cpio -i -d -m`), are the path."""
    app = cached["make"]()
    out = tmp_path / "disk"
    out.mkdir()
    sent = 0
    for b, n in _listing(app, cached["top"]):
        status, headers, body = call(app, f"/boot/{cached['top'].name}/path/{b}.cpio")
        assert status == 200 and len(body) == n == int(headers["Content-Length"])
        subprocess.run(["busybox", "cpio", "-i", "-d", "-m"], input=body, cwd=out, check=True,
                       capture_output=True)
        sent += n
    for p in cached["closure"]:
        got = out / "nix" / "store" / os.path.basename(p)
        for f in Path(p).rglob("*"):
            g = got / f.relative_to(p)
            if f.is_symlink():
                assert os.readlink(g) == os.readlink(f)
            elif f.is_file():
                assert g.read_bytes() == f.read_bytes()
    assert os.readlink(out / "nix/store" / cached["big"].name / "bin/sh") == "busybox"
    ev = [e for e in cached["backend"].events if e["kind"] == "boot.path"]
    assert len(ev) == 4 and sum(e["data"]["bytes"] for e in ev) == sent
    assert {e["data"]["status"] for e in ev} == {"completed"}
    assert app.stats()["bytes_sent"]["path"] == sent


def test_cached_host_gets_the_stage1_only_with_mode_and_cache_key(cached):
    """Mode cached: the host's generation(s) as today, but the initrd URL is the stage 1
    alone and the kernel line says nixie.mode=cached and carries the cache's key."""
    app = cached["make"](cache_key=KEY)
    text = call(app, f"/boot/{MAC}.ipxe")[2].decode()
    token = text.split("nixie.token=")[1].split()[0]
    assert_golden("cached.ipxe", text.replace(token, "TOKEN"))
    top = cached["top"].name
    assert f"initrd --name initrd {BASE}/boot/{top}/stage1" in text
    assert f"nixie.mode=cached nixie.cache_key={KEY}" in text
    status, _, body = call(app, f"/boot/{top}/stage1")
    assert status == 200 and body == (cached["store"] / ("2" * 32 + "-initrd-stage1")
                                      / "initrd").read_bytes()
    menu = call(cached["make"](menu=True, cache_key=KEY), f"/boot/{MAC}.ipxe")[2].decode()
    assert "menu Nixie: c1" in menu and f"/boot/{top}/stage1" in menu
    assert "nixie.mode=cached" in menu and f"/boot/{top}/initrd" not in menu
    ev = [e for e in cached["backend"].events if e["kind"] == "boot.script"]
    assert [e["data"]["script"] for e in ev] == ["cached", "cached"]


@pytest.mark.parametrize("path", [
    "/boot/{top}/path/{outside}.cpio",           # a real store path outside the closure
    "/boot/{top}/path/{unknown}.cpio",           # no such store path
    "/boot/{top}/path/{inside}",                 # no .cpio
    "/boot/{top}/path/{inside}.cpio.zst",
    "/boot/{top}/path/..",
    "/boot/{top}/path/...cpio",
    "/boot/{top}/path/..%2F..%2Fetc%2Fpasswd.cpio",
    "/boot/{top}/path/{inside}.cpio/x",
    "/boot/{top}/path/%00.cpio",
    "/boot/../path/{inside}.cpio",
    "/boot/{unknown}/path/{inside}.cpio",        # a toplevel the router does not have
    "/boot/{inside}x/closure",
    "/boot/{unknown}/closure",
])
def test_anything_but_a_closure_path_is_404_and_builds_nothing(cached, path):
    app = cached["make"]()
    inside = os.path.basename(cached["closure"][0])
    url = path.format(top=cached["top"].name, outside=cached["outside"].name, inside=inside,
                      unknown="0" * 32 + "-nope")
    status, _, body = call(app, url)
    assert status == 404, (url, body)
    assert not cached["cache"].built and not list(cached["cache"].dir.glob("*.cpio"))
    assert b"not in any closure" not in body


def test_the_closure_index_is_made_once_per_toplevel_and_a_few_are_kept(cached, monkeypatch):
    """Path fetches of one toplevel look its closure up once, not once per fetch; the
    index keeps MEMBER_TOPLEVELS toplevels, the least recently used one goes first."""
    paths, top = cached["backend"].paths, str(cached["top"])
    asked: list[str] = []
    closure = paths.images.closure
    monkeypatch.setattr(paths.images, "closure", lambda t: asked.append(t) or closure(t))
    app = cached["make"]()
    inside = os.path.basename(cached["closure"][0])
    for _ in range(20):
        status, _, body = call(app, f"/boot/{cached['top'].name}/path/{inside}.cpio")
        assert status == 200, body
    assert call(app, f"/boot/{cached['top'].name}/path/{'9' * 32}-nope.cpio")[0] == 404
    assert asked == [top]
    others = [str(p) for p in cached["closure"] if p != top]  # toplevels of their own
    for t in others[:MEMBER_TOPLEVELS - 1]:
        assert paths.archive(t, os.path.basename(t)) is not None
    assert paths.archive(top, inside) is not None and asked.count(top) == 1  # still kept
    for t in others[MEMBER_TOPLEVELS - 1:] + [str(cached["outside"])]:
        paths.archive(t, os.path.basename(t))
    asked.clear()
    paths.archive(others[0], os.path.basename(others[0]))  # least recently used: gone
    paths.archive(top, inside)  # used since: kept
    assert asked == [others[0]], asked


def _port_members(port: type) -> set[str]:
    return {n for n, v in vars(port).items() if callable(v) and not n.startswith("_")}


@pytest.mark.parametrize("backend", [StoreBootArtifacts, NoArtifacts, SpecBackend, CachedBackend])
def test_cached_netboot_is_on_the_typed_artifacts_port_and_every_backend_has_it(backend):
    """closure_listing and path_artifact are members of BootArtifacts (HTTP boot calls
    them, it does not probe for them), and every backend implements the whole port."""
    members = _port_members(BootArtifacts)
    assert {"closure_listing", "path_artifact"} <= members, members
    assert not [n for n in members if not callable(getattr(backend, n, None))]


def test_a_backend_without_cached_netboot_is_asked_and_answers_404(tmp_path):
    """A backend whose port answers None (no cached netboot) is asked through the port:
    the 404 names the missing closure, not "not a store path"."""
    backend = SpecBackend({"hosts": [], "systems": {}})
    app = create_boot_app(hosts=backend, events=backend, artifacts=backend, agent=backend,
                          settings=BootSettings(BASE), tftp_root=str(tmp_path))
    top = "z" * 32 + "-nixos-system-c1"
    status, _, body = call(app, f"/boot/{top}/closure")
    assert (status, body) == (404, f"no closure for {top}\n".encode())
    inside = "1" * 32 + "-linux"
    status, _, body = call(app, f"/boot/{top}/path/{inside}.cpio")
    assert (status, body) == (404, f"{inside} is not in the closure of {top}\n".encode())


def test_a_flood_of_unknown_paths_builds_nothing_and_one_path_is_built_once(cached):
    """2 000 requests for names outside the closure cost no archive and no file; 64
    concurrent requests for one closure path build its archive once."""
    app = cached["make"]()
    top = cached["top"].name
    for i in range(2000):
        assert call(app, f"/boot/{top}/path/{i:032d}-flood.cpio")[0] == 404
    assert not cached["cache"].built and not list(cached["cache"].dir.iterdir())
    inside = cached["big"].name
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda _: call(app, f"/boot/{top}/path/{inside}.cpio"), range(64)))
    assert {s for s, _, _ in got} == {200} and len({b for _, _, b in got}) == 1
    assert cached["cache"].built == {inside: 1}


def test_escapes_over_a_real_server(cached):
    """The same through waitress on loopback, with the raw request line a client sends
    (percent-encoded dots and slashes): nothing outside the closure comes back."""
    app = cached["make"]()
    srv = make_server(app, "127.0.0.1:0", threads=2)
    port = srv.socket.getsockname()[1]
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    top = cached["top"].name
    try:
        for raw in (f"/boot/{top}/path/%2e%2e%2f%2e%2e%2f{cached['outside'].name}.cpio",
                    f"/boot/{top}/path/..%2f{cached['outside'].name}.cpio",
                    f"/boot/{top}/path/{cached['outside'].name}.cpio",
                    f"/boot/{top}/../{cached['outside'].name}/closure"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", raw)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 404 and b"not in any closure" not in body, raw
        assert not cached["cache"].built
    finally:
        srv.close()
        th.join(5)


# ------------------------------------------------------------------ the router's state
def test_migration_41_widens_the_checks_and_keeps_every_row(tmp_path):
    """A database at version 39 with a host, a MAC, a boot token and an event: after the
    migrations the rows (and their foreign keys) are all there, `cached` is accepted as a
    mode, boot mode and token purpose, and anything else is still refused."""
    path = tmp_path / "nixie.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.row_factory = sqlite3.Row
    old.execute("PRAGMA foreign_keys = ON")
    for v in sorted(k for k in MIGRATIONS if k <= 39):
        for stmt in db._split_sql(MIGRATIONS[v]):
            old.execute(stmt)
    old.execute("PRAGMA user_version = 39")
    # rows written as version 39 knew them (today's domain functions read later columns)
    hid = old.execute("INSERT INTO hosts (name, flake, attr, mode, created_at) "
                      "VALUES ('web1', 'f', 'web1', 'local', 1)"
                      ).lastrowid
    old.execute("INSERT INTO host_macs (host_id, mac) VALUES (?, ?)", (hid, MAC))
    old.execute("INSERT INTO boot_tokens (token_hash, host_id, client_ip, purpose, created_at,"
                " expires_at) VALUES ('h', ?, '10.0.0.9', 'install', 1, 2)", (hid,))
    with pytest.raises(sqlite3.IntegrityError):
        old.execute("UPDATE hosts SET mode = 'cached'")
    old.close()
    conn = db.connect(path)
    assert db.schema_version(conn) == max(MIGRATIONS)
    h = hosts.get_host(conn, "web1")
    assert h["macs"] == [MAC] and h["mode"] == "local"
    assert conn.execute("SELECT count(*) FROM boot_tokens").fetchone()[0] == 1
    hosts.update_host(conn, "web1", mode="cached")
    conn.execute("UPDATE hosts SET boot_mode = 'cached'")
    assert agent.issue_token(conn, hid, None, client_ip="10.0.0.9", purpose="cached")
    for bad in ("UPDATE hosts SET mode = 'bogus'", "UPDATE hosts SET boot_mode = 'x'",
                "UPDATE boot_tokens SET purpose = 'x'"):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(bad)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # another connection opened before sees the new schema too
    assert db.connect(path, migrate=False).execute(
        "UPDATE hosts SET mode = 'cached' WHERE id = ?", (hid,)).rowcount == 1


def test_a_cached_boot_reports_booted_with_boot_mode_cached_and_may_fail(tmp_path):
    store = Store(tmp_path / "nixie.db")
    conn = store.conn()
    hosts.add_host(conn, "c1", [MAC], "f", mode="cached")
    hid = hosts.get_host(conn, "c1")["id"]
    backend = SqliteBackend(store)
    tok = agent.issue_token(conn, hid, None, client_ip="10.0.0.9", purpose="cached")
    r = backend.agent_report(tok, "failed", "cached boot failed: disk /dev/vda is too small",
                             "10.0.0.9")
    h = hosts.get_host(conn, "c1")
    assert r["state"] == "failed" and h["state"] == "failed" and h["mode"] == "cached"
    tok = agent.issue_token(conn, hid, None, client_ip="10.0.0.9", purpose="cached")
    backend.agent_report(tok, "booted", "c1 booted from its disk's store (mode cached)",
                         "10.0.0.9")
    h = hosts.get_host(conn, "c1")
    assert h["state"] == "booted" and h["boot_mode"] == "cached"
    with pytest.raises(agent.AgentRejected):  # a cached boot installs nothing
        backend.agent_report(agent.issue_token(conn, hid, None, client_ip="10.0.0.9",
                                               purpose="cached"), "installed", "", "10.0.0.9")


def test_an_install_boot_carries_the_cache_key_too(cached):
    """Issue 17: the router now sends `nixie.cache_key=` (the NixOS installer trusts the
    router's cache with it); without a key made yet, nothing is sent."""
    cached["backend"].spec["hosts"][0]["mode"] = "install"
    text = call(cached["make"](cache_key=KEY), f"/boot/{MAC}.ipxe")[2].decode()
    assert f"nixie.mode=install nixie.system=/nix/store/{cached['top'].name} " \
           f"nixie.cache_key={KEY}" in text and "/initrd" in text
    assert "nixie.cache_key" not in call(cached["make"](), f"/boot/{MAC}.ipxe")[2].decode()
