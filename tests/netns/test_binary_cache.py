"""The router's store as a signed binary cache, pulled by the real `nix copy`.

The app runs standalone under waitress in a namespace, built from a lab config the way
`nixie serve` builds it (`create_binary_cache`); its build worker signs at build
completion. The path is built before the router's key exists (a fresh state dir over an
existing store), and the cache's `nix` refuses `nix store sign` as the NixOS daemon does
for the unprivileged appliance (issue 15, finding 10)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import uuid

import pytest

from appliance.config.schema import load_config
from appliance.domain import builds, events, hosts
from appliance.nix.binary_cache import (
    create_binary_cache,
    nix32,
    render_narinfo,
    sign_closure,
    to_nix32_hash,
)
from appliance.nix.buildworker import BuildWorker, claim_next
from appliance.nix.command import Nix
from appliance.state.db import Store
from lab import flake as labflake
from lab.netns import Netns, veth, wait_port
from tests.conftest import ROOT
from tests.nixlab import NIX_EXTRA, lab_config

SERVER = textwrap.dedent("""
    import sys
    from waitress import serve
    from appliance.config.schema import load_config
    from appliance.nix.binary_cache import create_binary_cache

    cache = create_binary_cache(load_config(sys.argv[1]))

    def tampering(environ, start_response):
        # /tampered/... serves the same files with one NAR byte flipped
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/tampered/"):
            return cache(environ, start_response)
        environ["PATH_INFO"] = path[len("/tampered"):]
        body = b"".join(cache(environ, start_response))
        if path.endswith(".nar") and body:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1:]
        return [body]

    serve(tampering, listen="10.88.0.1:5000", threads=4, ident="nixie-cache")
""")

# what the NixOS daemon answers the unprivileged appliance: no signatures added to the store
REFUSING_NIX = """#!/bin/sh
case "$*" in
    *"store sign"*) echo "error: you are not privileged to add signatures" >&2; exit 1 ;;
esac
exec {real} "$@"
"""


@pytest.fixture(scope="module")
def flake_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bcflake")
    return labflake.materialise(tmp / "flake", release=f"cache-test {uuid.uuid4()}")


@pytest.fixture(scope="module")
def toplevel(flake_dir):
    """Built before any router key exists."""
    nix = Nix(extra_config=NIX_EXTRA)
    out = nix.run(["nix", "build", "--json", "--no-link",
                   f"{flake_dir}#nixosConfigurations.demo.config.system.build.toplevel"])
    return json.loads(out)[0]["outputs"]["out"]


def router_config(tmp_path):
    """A lab config whose nix refuses `nix store sign`; its state dir is new."""
    path, _ = lab_config(tmp_path)
    bindir = tmp_path / "nixbin"
    bindir.mkdir()
    for tool in ("nix", "nix-store", "nix-build"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                              text=True).stdout.strip()
        (bindir / tool).write_text(REFUSING_NIX.format(real=real))
        (bindir / tool).chmod(0o755)
    raw = json.loads(path.read_text())
    raw["nix"]["bin_dir"] = str(bindir)
    path.write_text(json.dumps(raw))
    return path, load_config(path)


@pytest.fixture
def cache_server(tmp_path):
    router, client = Netns(), Netns()
    proc = None
    try:
        veth(router, "eth0", client, "eth0")
        router.run("ip", "addr", "add", "10.88.0.1/24", "dev", "eth0")
        client.run("ip", "addr", "add", "10.88.0.2/24", "dev", "eth0")
        cfg_path, cfg = router_config(tmp_path)
        log = open(tmp_path / "server.log", "w")
        proc = router.popen(sys.executable, "-c", SERVER, str(cfg_path),
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert wait_port(client, "10.88.0.1", 5000, timeout=20), \
            (tmp_path / "server.log").read_text()
        yield client, cfg, "http://10.88.0.1:5000"
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        router.close()
        client.close()


def complete_a_build(cfg, flake_dir) -> dict:
    """The router's build worker builds the host (already in the store: nothing to do)
    and, at completion, signs the closure."""
    store = Store(cfg.db_path)
    conn = store.conn()
    hosts.add_host(conn, "demo", ["52:54:00:5e:00:01"], str(flake_dir), None, "netboot")
    worker = BuildWorker(cfg, store)
    worker.log_dir.mkdir(parents=True, exist_ok=True)
    worker.root_dir.mkdir(parents=True, exist_ok=True)
    b = builds.enqueue(conn, "demo")
    worker.build_one(conn, claim_next(conn))
    return builds.get_build(conn, b["id"])


def nix_copy(client: Netns, url: str, dest, path: str, public_key: str):
    env = {**os.environ, "NIX_CONFIG": "\n".join([
        "experimental-features = nix-command flakes", NIX_EXTRA,
        "require-sigs = true", f"trusted-public-keys = {public_key}",
        # every run makes a new key: no narinfo from an earlier run's cache
        "narinfo-cache-positive-ttl = 0", "narinfo-cache-negative-ttl = 0"])}
    return subprocess.run(client.argv("nix", "copy", "--from", url, "--to",
                                      f"local?root={dest}", path),
                          capture_output=True, text=True, env=env, timeout=300)


def test_nix32_matches_nix():
    # busybox's NAR hash as path-info prints it (SRI) and as its CA field (nix32)
    assert to_nix32_hash("sha256-SUza0DfPfQp17oFvwGC5JmPeEwlgKv9DwvnOVdreTEA=") == \
        "sha256:0h2cvvd5bkprq91zyak0149xwqr6p5hc0vw1xrshlzfg6z8dlk29"
    assert nix32(b"") == ""


def test_nix_copy_of_a_path_older_than_the_key_checks_signatures(cache_server, toplevel,
                                                                 flake_dir, tmp_path):
    client, cfg, url = cache_server
    key_dir = tmp_path / "state" / "binary-cache"
    assert stat.S_IMODE(os.stat(key_dir / "secret").st_mode) == 0o600
    public = (key_dir / "public").read_text().strip()
    info = client.run("curl", "-sf", f"{url}/nix-cache-info").stdout
    assert "StoreDir: /nix/store" in info
    narinfo_url = f"{url}/{os.path.basename(toplevel)[:32]}.narinfo"

    # before a build completed: the old path is not served unsigned, and nothing is a 500
    r = client.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", narinfo_url)
    assert r.stdout == "404"
    early = nix_copy(client, url, tmp_path / "early", toplevel, public)
    assert early.returncode != 0 and not (tmp_path / "early" / toplevel.lstrip("/")).exists()

    b = complete_a_build(cfg, flake_dir)
    assert b["status"] == "succeeded" and b["toplevel"] == toplevel, b
    conn = Store(cfg.db_path).conn()
    assert events.recent(conn, kind="cache.sign_failed", limit=5) == []

    narinfo = client.run("curl", "-sf", narinfo_url).stdout
    assert f"StorePath: {toplevel}" in narinfo and "Sig: " + public.split(":")[0] in narinfo
    dest = tmp_path / "dest"
    r = nix_copy(client, url, dest, toplevel, public)
    assert r.returncode == 0, r.stderr
    assert (dest / toplevel.lstrip("/") / "init").read_bytes() == open(f"{toplevel}/init", "rb").read()
    nix = Nix(extra_config=NIX_EXTRA)
    copied = nix.run(["nix-store", "--store", f"local?root={dest}", "-qR", toplevel]).split()
    assert sorted(copied) == sorted(nix.run(["nix-store", "-qR", toplevel]).split())

    # a key the client does not trust: refused
    other = nix_copy(client, url, tmp_path / "dest2", toplevel,
                     "someone-else:" + "A" * 43 + "=")
    assert other.returncode != 0 and "signature" in other.stderr.lower()


def test_tampered_nar_is_rejected(cache_server, toplevel, flake_dir, tmp_path):
    client, cfg, url = cache_server
    assert complete_a_build(cfg, flake_dir)["status"] == "succeeded"
    public = (tmp_path / "state" / "binary-cache" / "public").read_text().strip()
    r = nix_copy(client, f"{url}/tampered", tmp_path / "dest", toplevel, public)
    assert r.returncode != 0
    assert "hash mismatch" in r.stderr or "NAR hash" in r.stderr, r.stderr
    assert not (tmp_path / "dest" / toplevel.lstrip("/")).exists()


def test_unknown_and_malformed_requests_get_404(tmp_path, toplevel, flake_dir):
    _, cfg = lab_config(tmp_path)
    cache = create_binary_cache(cfg)
    statuses = []

    def call(path, method="GET"):
        body = b"".join(cache({"PATH_INFO": path, "REQUEST_METHOD": method},
                              lambda s, h, *a: statuses.append(s)))
        return statuses[-1], body

    assert call("/" + "0" * 32 + ".narinfo")[0].startswith("404")
    assert call("/../../etc/passwd")[0].startswith("404")
    assert call("/nar/" + "e" * 32 + ".nar")[0].startswith("404")  # 'e' is not nix32
    assert call("/nix-cache-info", "POST")[0].startswith("405")
    top = f"/{os.path.basename(toplevel)[:32]}.narinfo"
    status, body = call(top)  # in the store, not signed by this router
    assert status.startswith("404") and b"signed" in body
    assert call(f"/nar/{os.path.basename(toplevel)[:32]}.nar")[0].startswith("404")
    assert complete_a_build(cfg, flake_dir)["status"] == "succeeded"
    status, body = call(top, "HEAD")
    assert status.startswith("200") and body == b""
    assert cache.stats["bad_requests"] == 1


def test_a_path_added_right_after_a_miss_is_served_at_once(tmp_path):
    """A client asks for a path, the router lacks it (404); a build adds and signs it a
    moment later: the next ask is answered from the store's new listing, without
    waiting for the periodic rescan (here an hour: only the store's change can do it)."""
    _, cfg = lab_config(tmp_path)
    cache = create_binary_cache(cfg)
    cache.RESCAN_INTERVAL = 3600.0
    nix = Nix(extra_config=NIX_EXTRA)
    src = tmp_path / "payload"
    src.write_text(f"added after a miss {uuid.uuid4()}\n")
    digest = nix.run(["nix-hash", "--type", "sha256", "--flat", "--base32", str(src)]).strip()
    path = nix.run(["nix-store", "--print-fixed-path", "sha256", digest, "payload"]).strip()
    url = f"/{os.path.basename(path)[:32]}.narinfo"
    statuses = []

    def call():
        body = b"".join(cache({"PATH_INFO": url, "REQUEST_METHOD": "GET"},
                              lambda s, h, *a: statuses.append(s)))
        return statuses[-1], body

    assert call()[0].startswith("404")
    assert call()[0].startswith("404")  # a second miss, store unchanged: still a miss
    added = nix.run(["nix", "store", "add-file", "--name", "payload", str(src)]).strip()
    assert added == path
    assert sign_closure(nix, cache.sigs, [path]) == 1
    status, body = call()
    assert status.startswith("200"), body
    assert f"StorePath: {path}".encode() in body


def test_an_unusable_key_or_a_failing_nix_is_a_503_with_an_event_never_a_500(tmp_path,
                                                                                toplevel):
    path, _ = lab_config(tmp_path)
    raw = json.loads(path.read_text())
    (tmp_path / "bad.sec").write_text("not a key")
    raw["nix"]["cache_key_file"] = str(tmp_path / "bad.sec")
    path.write_text(json.dumps(raw))
    recorded = []
    cache = create_binary_cache(load_config(path),
                                events=lambda kind, msg, **kw: recorded.append((kind, msg)))
    statuses = []

    def call(path):
        body = b"".join(cache({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                              lambda s, h, *a: statuses.append(s)))
        return statuses[-1], body

    for _ in range(3):
        status, body = call(f"/{os.path.basename(toplevel)[:32]}.narinfo")
        assert status.startswith("503") and b"unavailable" in body
    assert call("/nix-cache-info")[0].startswith("200")
    assert len(recorded) == 1 and recorded[0][0] == "cache.unavailable"
    assert "is not a Nix secret key" in recorded[0][1]

    # a failure while answering (here: the store cannot be read) is a 503 too
    (tmp_path / "two").mkdir()
    _, cfg = lab_config(tmp_path / "two")
    good = create_binary_cache(cfg, events=lambda kind, msg, **kw: recorded.append((kind, msg)))
    good.store_dir = str(tmp_path / "no-store")
    good._rescan = lambda: (_ for _ in ()).throw(OSError("disk gone"))
    got = []
    b"".join(good({"PATH_INFO": f"/{os.path.basename(toplevel)[:32]}.narinfo",
                   "REQUEST_METHOD": "GET"}, lambda s, h, *a: got.append(s)))
    assert got[0].startswith("503") and recorded[-1][0] == "cache.unavailable"


def test_render_narinfo_shape():
    text = render_narinfo({"path": "/nix/store/" + "a" * 32 + "-x", "narSize": 5,
                           "narHash": "sha256-SUza0DfPfQp17oFvwGC5JmPeEwlgKv9DwvnOVdreTEA=",
                           "references": ["/nix/store/" + "b" * 32 + "-y"],
                           "signatures": ["k:sig"]})
    assert "URL: nar/" + "a" * 32 + ".nar\n" in text
    assert "References: " + "b" * 32 + "-y\n" in text and "Sig: k:sig\n" in text
