"""nixos-image/cached/nixie-cached, the NixOS cached netboot's stage 1, at its boundary:
its fetch step (`nixie-cached fetch ROOT`, the exact script the initrd runs) with the real
`nix` CLI against the router's signed binary cache, into an empty root.

The cache is the router's own app (`create_binary_cache`, signed by the router's build
worker at build completion) served by waitress in a namespace, as tests/netns/
test_binary_cache.py serves it; the same process records the agent reports the script
POSTs to /api/v1/agent/events and counts each NAR it sends. What only a NixOS initrd has
(the static nix, udev's /dev/disk/by-label, mkfs.ext4 on the real disk, switch_root) is
not run here: `nixie-cached boot` is checked by the module evaluation test and on NixOS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from appliance.domain import builds, hosts
from appliance.nix.buildworker import BuildWorker, claim_next
from appliance.nix.command import Nix
from appliance.state.db import Store
from lab import flake as labflake
from lab.netns import Netns, veth, wait_port
from tests.agent_recorder import busybox_bin
from tests.conftest import ROOT
from tests.nixlab import NIX_EXTRA, lab_config

SCRIPT = ROOT / "nixos-image" / "cached" / "nixie-cached"
URL = "http://10.88.0.1:5000"

# the router's cache app, plus: a record of every NAR sent and agent report received, and
# a cut (after half of the next NAR the router process dies) when the file `cut` exists
SERVER = textwrap.dedent("""
    import json, os, sys
    from waitress import serve
    from appliance.config.schema import load_config
    from appliance.nix.binary_cache import create_binary_cache

    cache = create_binary_cache(load_config(sys.argv[1]))
    rec = sys.argv[2]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/api/v1/agent/events" and environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            with open(os.path.join(rec, "events.jsonl"), "a") as f:
                f.write(json.dumps({"auth": environ.get("HTTP_AUTHORIZATION"),
                                    **json.loads(body)}) + "\\n")
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        if not path.startswith("/nix-cache/"):
            start_response("404 Not Found", [])
            return [b""]
        environ["PATH_INFO"] = path[len("/nix-cache"):]
        body = b"".join(cache(environ, start_response))
        if path.endswith(".nar") and body:
            with open(os.path.join(rec, "nars.log"), "a") as f:
                f.write(path + "\\n")
            if os.path.exists(os.path.join(rec, "cut")):
                def cut():
                    yield body[:len(body) // 2]
                    os._exit(0)
                return cut()
        return [body]

    serve(app, listen="10.88.0.1:5000", threads=4, ident="nixie-cache")
""")


@pytest.fixture(scope="module")
def flake_dir(tmp_path_factory):
    return labflake.materialise(tmp_path_factory.mktemp("cachedflake") / "flake",
                                release=f"cached-nixos 1 {uuid.uuid4()}")


class Router:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.rec = tmp_path / "rec"
        self.rec.mkdir()
        self.cfg_path, self.cfg = lab_config(tmp_path)
        self.router, self.client = Netns(), Netns()
        self.proc = None
        self.conn = Store(self.cfg.db_path).conn()
        self.worker = None

    def start(self):
        veth(self.router, "eth0", self.client, "eth0")
        self.router.run("ip", "addr", "add", "10.88.0.1/24", "dev", "eth0")
        self.client.run("ip", "addr", "add", "10.88.0.2/24", "dev", "eth0")
        self.start_server()

    def start_server(self):
        self.log = open(self.tmp / "server.log", "w")
        self.proc = self.router.popen(sys.executable, "-c", SERVER, str(self.cfg_path),
                                      str(self.rec), stdout=self.log, stderr=subprocess.STDOUT,
                                      cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert wait_port(self.client, "10.88.0.1", 5000, timeout=20), \
            (self.tmp / "server.log").read_text()

    def build(self, flake) -> str:
        """The router's build worker builds the host and signs its closure."""
        if self.worker is None:
            hosts.add_host(self.conn, "demo", ["52:54:00:5e:00:01"], str(flake), None, "cached")
            self.worker = BuildWorker(self.cfg, Store(self.cfg.db_path))
            self.worker.log_dir.mkdir(parents=True, exist_ok=True)
            self.worker.root_dir.mkdir(parents=True, exist_ok=True)
        b = builds.enqueue(self.conn, "demo")
        self.worker.build_one(self.conn, claim_next(self.conn))
        got = builds.get_build(self.conn, b["id"])
        assert got["status"] == "succeeded", got
        return got["toplevel"]

    def wait_served(self, system: str) -> None:
        """The cache reads the store's listing again at most once a second: wait until
        the new path's narinfo is served (a host boots long after its build)."""
        url = f"{URL}/nix-cache/{os.path.basename(system)[:32]}.narinfo"
        for _ in range(50):
            if self.client.run("curl", "-sf", "-o", "/dev/null", url, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"{url} is not served")

    @property
    def public_key(self) -> str:
        return (self.tmp / "state" / "binary-cache" / "public").read_text().strip()

    def nars(self) -> list[str]:
        f = self.rec / "nars.log"
        return f.read_text().split() if f.exists() else []

    def events(self) -> list[dict]:
        f = self.rec / "events.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.router.close()
        self.client.close()


@pytest.fixture
def router(tmp_path):
    r = Router(tmp_path)
    try:
        r.start()
        yield r
    finally:
        r.close()


@pytest.fixture
def fetch(tmp_path):
    """`nixie-cached fetch ROOT` as the initrd runs it: POSIX sh (dash), busybox's text
    tools and wget, the real nix, the kernel line from a file."""
    bindir = busybox_bin(tmp_path / "bin")
    (bindir / "sh").unlink()
    for applet in ("grep", "tail", "tee", "wc", "mkdir", "ln"):  # NixOS stage 1 has these
        (bindir / applet).symlink_to(shutil.which("busybox"))
    nix_dir = os.path.dirname(subprocess.run(["sh", "-c", "command -v nix"], capture_output=True,
                                             text=True, check=True).stdout.strip())

    def run(client: Netns, root, system: str, key: str | None):
        words = [f"initrd=initrd init={system}/init", f"nixie.api={URL}/",
                 "nixie.token=tok-cached-1", "nixie.mode=cached"]
        if key is not None:
            words.append(f"nixie.cache_key={key}")
        (tmp_path / "cmdline").write_text(" ".join(words) + "\n")
        env = {"PATH": f"{bindir}:{nix_dir}", "NIXIE_CMDLINE": str(tmp_path / "cmdline"),
               "TMPDIR": str(tmp_path), "HOME": str(tmp_path / "home"),
               "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
               "NIX_CONFIG": NIX_EXTRA + "\nexperimental-features = nix-command"}
        argv = ["env", "-i", *[f"{k}={v}" for k, v in env.items()],
                "/bin/sh", str(SCRIPT), "fetch", str(root)]
        return subprocess.run(client.argv(*argv), capture_output=True, text=True, timeout=300)

    return run


def closure(system: str) -> list[str]:
    return sorted(Nix(extra_config=NIX_EXTRA).run(["nix-store", "-qR", system]).split())


def on_disk(root, system: str) -> list[str]:
    r = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "path-info",
                        "-r", "--store", f"local?root={root}", system],
                       capture_output=True, text=True,
                       env={**os.environ, "NIX_CONFIG": NIX_EXTRA})
    return sorted(r.stdout.split()) if r.returncode == 0 else []


def store_dirs(root) -> list[str]:
    """What is under ROOT/nix/store besides nix's own .links and lock files."""
    return sorted(p.name for p in (root / "nix" / "store").iterdir()
                  if p.name != ".links" and not p.name.endswith(".lock"))


def test_fetch_substitutes_only_missing_signed_paths(router, fetch, flake_dir, tmp_path):
    gen1 = router.build(flake_dir)
    key = router.public_key
    root = tmp_path / "disk"

    # no key, or a key that is not the router's: refused, nothing in the store, reported
    r = fetch(router.client, root, gen1, None)
    assert r.returncode == 1 and "no nixie.cache_key=" in r.stderr
    r = fetch(router.client, root, gen1, "someone-else:" + "A" * 43 + "=")
    assert r.returncode == 1, r.stderr
    assert "signature" in r.stderr.lower(), r.stderr
    assert on_disk(root, gen1) == []
    assert store_dirs(root) == []
    failed = [e for e in router.events() if e["event"] == "failed"]
    assert len(failed) == 2 and failed[0]["auth"] == "Bearer tok-cached-1"
    assert failed[0]["message"] == "cached boot failed: no nixie.cache_key= on the kernel command line"
    assert failed[1]["message"].startswith(f"cached boot failed: fetching {gen1} from {URL}/nix-cache failed")

    # first boot: the whole closure lands, registered and checked
    before = len(router.nars())
    r = fetch(router.client, root, gen1, key)
    assert r.returncode == 0, r.stderr
    want = closure(gen1)
    assert on_disk(root, gen1) == want
    assert len(router.nars()) - before == len(want)
    assert (root / gen1.lstrip("/") / "init").read_bytes() == open(f"{gen1}/init", "rb").read()
    assert os.readlink(root / "nix/var/nix/profiles/system") == gen1
    assert f"fetched {len(want)} of {len(want)} store paths, 0 kept" in r.stderr

    # a one-path change (a new generation whose toplevel alone differs): only that NAR moves
    labflake.set_release(flake_dir, f"cached-nixos 2 {uuid.uuid4()}")
    gen2 = router.build(flake_dir)
    assert gen2 != gen1
    assert set(closure(gen2)) - set(want) == {gen2}
    before = router.nars()
    router.wait_served(gen2)
    r = fetch(router.client, root, gen2, key)
    assert r.returncode == 0, r.stderr
    moved = router.nars()[len(before):]
    assert moved == [f"/nix-cache/nar/{os.path.basename(gen2)[:32]}.nar"], moved
    assert on_disk(root, gen2) == closure(gen2)
    assert f"fetched 1 of {len(want)} store paths, {len(want) - 1} kept" in r.stderr
    assert not [e for e in router.events() if e["event"] != "failed"]  # stage 2's agent says booted


def test_router_gone_mid_fetch_is_reported_and_leaves_no_half_path(router, fetch, flake_dir,
                                                                   tmp_path):
    system = router.build(flake_dir)
    root = tmp_path / "disk"
    (router.rec / "cut").touch()  # the router dies halfway through the first NAR
    r = fetch(router.client, root, system, router.public_key)
    assert r.returncode == 1
    assert f"FAILED: fetching {system} from {URL}/nix-cache failed" in r.stderr
    assert len(router.nars()) == 1 and router.proc.wait(timeout=10) == 0
    # nothing registered, and no directory of a path under the store
    assert on_disk(root, system) == []
    assert store_dirs(root) == []
    # the report could not reach the dead router: said so, not silently lost
    assert "could not report the failure to the router" in r.stderr
    # the router back: the next boot's fetch completes over what the cut left
    (router.rec / "cut").unlink()
    router.start_server()
    r = fetch(router.client, root, system, router.public_key)
    assert r.returncode == 0, r.stderr
    assert on_disk(root, system) == closure(system)
