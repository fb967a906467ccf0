"""The router's store as a signed binary cache, pulled by the real `nix copy`.

The app runs standalone under waitress in a namespace (the HTTP boot server
mounts it at /nix-cache; that server is wired at merge)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import uuid

import pytest

from appliance.nix.binary_cache import BinaryCache, nix32, render_narinfo, to_nix32_hash
from appliance.nix.command import Nix
from lab import flake as labflake
from lab.netns import Netns, veth, wait_port
from tests.conftest import ROOT
from tests.nixlab import NIX_EXTRA

SERVER = textwrap.dedent("""
    import sys
    from waitress import serve
    from appliance.nix.binary_cache import BinaryCache
    from appliance.nix.command import Nix

    cache = BinaryCache(Nix(extra_config=sys.argv[2]), sys.argv[1])

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


@pytest.fixture(scope="module")
def toplevel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bcflake")
    d = labflake.materialise(tmp / "flake", release=f"cache-test {uuid.uuid4()}")
    nix = Nix(extra_config=NIX_EXTRA)
    out = nix.run(["nix", "build", "--json", "--no-link",
                   f"{d}#nixosConfigurations.demo.config.system.build.toplevel"])
    return json.loads(out)[0]["outputs"]["out"]


@pytest.fixture
def cache_server(tmp_path):
    router, client = Netns(), Netns()
    proc = None
    try:
        veth(router, "eth0", client, "eth0")
        router.run("ip", "addr", "add", "10.88.0.1/24", "dev", "eth0")
        client.run("ip", "addr", "add", "10.88.0.2/24", "dev", "eth0")
        key_dir = tmp_path / "keys"
        log = open(tmp_path / "server.log", "w")
        proc = router.popen(sys.executable, "-c", SERVER, str(key_dir), NIX_EXTRA,
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert wait_port(client, "10.88.0.1", 5000, timeout=20), \
            (tmp_path / "server.log").read_text()
        yield client, key_dir, "http://10.88.0.1:5000"
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        router.close()
        client.close()


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


def test_nix_copy_from_router_cache_checks_signatures(cache_server, toplevel, tmp_path):
    client, key_dir, url = cache_server
    public = (key_dir / "public").read_text().strip()
    assert stat.S_IMODE(os.stat(key_dir / "secret").st_mode) == 0o600
    info = client.run("curl", "-sf", f"{url}/nix-cache-info").stdout
    assert "StoreDir: /nix/store" in info
    narinfo = client.run("curl", "-sf", f"{url}/{os.path.basename(toplevel)[:32]}.narinfo").stdout
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


def test_tampered_nar_is_rejected(cache_server, toplevel, tmp_path):
    client, key_dir, url = cache_server
    public = (key_dir / "public").read_text().strip()
    r = nix_copy(client, f"{url}/tampered", tmp_path / "dest", toplevel, public)
    assert r.returncode != 0
    assert "hash mismatch" in r.stderr or "NAR hash" in r.stderr, r.stderr
    assert not (tmp_path / "dest" / toplevel.lstrip("/")).exists()


def test_unknown_and_malformed_requests_get_404(tmp_path, toplevel):
    cache = BinaryCache(Nix(extra_config=NIX_EXTRA), tmp_path / "keys")
    statuses = []

    def call(path, method="GET"):
        body = b"".join(cache({"PATH_INFO": path, "REQUEST_METHOD": method},
                              lambda s, h: statuses.append(s)))
        return statuses[-1], body

    assert call("/" + "0" * 32 + ".narinfo")[0].startswith("404")
    assert call("/../../etc/passwd")[0].startswith("404")
    assert call("/nar/" + "e" * 32 + ".nar")[0].startswith("404")  # 'e' is not nix32
    assert call("/nix-cache-info", "POST")[0].startswith("405")
    status, body = call(f"/{os.path.basename(toplevel)[:32]}.narinfo", "HEAD")
    assert status.startswith("200") and body == b""
    assert cache.stats["bad_requests"] == 1


def test_render_narinfo_shape():
    text = render_narinfo({"path": "/nix/store/" + "a" * 32 + "-x", "narSize": 5,
                           "narHash": "sha256-SUza0DfPfQp17oFvwGC5JmPeEwlgKv9DwvnOVdreTEA=",
                           "references": ["/nix/store/" + "b" * 32 + "-y"],
                           "signatures": ["k:sig"]})
    assert "URL: nar/" + "a" * 32 + ".nar\n" in text
    assert "References: " + "b" * 32 + "-y\n" in text and "Sig: k:sig\n" in text
