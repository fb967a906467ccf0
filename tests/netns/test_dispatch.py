"""nix-netboot-serve's dispatch kinds "configuration" and "hydra" with the real nix.
Hydra is stood in for by a small HTTP server answering only the API call the
router makes (`/job/<project>/<jobset>/<job>/latest`, JSON)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance.config.schema import load_config
from appliance.nix.bootartifacts import StoreBootArtifacts
from appliance.nix.command import Nix
from appliance.state.db import Store
from lab import flake as labflake
from netservices.backend import Pending
from tests.nixlab import NIX_EXTRA, lab_config


@pytest.fixture(scope="module")
def flake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dispatch")
    return labflake.materialise(tmp / "flake", release=f"dispatch-test {uuid.uuid4()}")


def resolve_until_ready(ba, kind, args, timeout=120):
    deadline = time.monotonic() + timeout
    pendings = 0
    while True:
        try:
            return ba.resolve(kind, args), pendings
        except Pending as p:
            pendings += 1
            assert p.retry_after > 0
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_configuration_dispatch_builds_into_a_gc_root(tmp_path, flake):
    _path, cfg = lab_config(tmp_path)
    ba = StoreBootArtifacts(cfg, Store(cfg.db_path))
    try:
        d = ba.configurations_dir / "lab"
        d.mkdir(parents=True)
        (d / "default.nix").write_text(
            f'(builtins.getFlake "git+file://{flake}").nixosConfigurations.demo2'
            ".config.system.build.toplevel\n")
        target, _ = resolve_until_ready(ba, "configuration", ["lab"])
        assert target.toplevel.endswith("-nixos-system-demo2")
        assert target.kernel_params == ("console=ttyS0", "panic=-1")
        root = ba.gcroots / "configuration-lab"
        assert os.readlink(root) == target.toplevel
        roots = Nix(extra_config=NIX_EXTRA).run(["nix-store", "-q", "--roots", target.toplevel])
        assert str(root) in roots
        with pytest.raises(LookupError):
            ba.resolve("configuration", ["missing"])
        with pytest.raises(LookupError):
            ba.resolve("configuration", ["../lab"])
        bad = ba.configurations_dir / "broken"
        bad.mkdir()
        (bad / "default.nix").write_text("this is not nix (\n")
        with pytest.raises(LookupError, match="error"):
            resolve_until_ready(ba, "configuration", ["broken"])
    finally:
        ba.close()


class FakeHydra(BaseHTTPRequestHandler):
    """Only Hydra's `latest` redirect and the build's JSON."""

    out_path = ""
    seen: list[tuple[str, str]] = []

    def do_GET(self):
        FakeHydra.seen.append((self.path, self.headers.get("Accept", "")))
        if self.path == "/job/lab/main/demo/latest":
            self.send_response(302)
            self.send_header("Location", "/build/17")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/build/17":
            body = json.dumps({"id": 17, "finished": 1, "buildstatus": 0,
                               "buildoutputs": {"out": {"path": FakeHydra.out_path}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_hydra_dispatch_asks_the_api_and_realises_the_output(tmp_path, flake):
    nix = Nix(extra_config=NIX_EXTRA)
    out = json.loads(nix.run(["nix", "build", "--json", "--no-link",
                              f"{flake}#nixosConfigurations.demo.config.system.build.toplevel"]))
    FakeHydra.out_path = out[0]["outputs"]["out"]
    FakeHydra.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeHydra)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{srv.server_port}"
    try:
        path, _ = lab_config(tmp_path)
        raw = json.loads(path.read_text())
        raw["netboot"] = {"hydra_urls": [f"http://{host}"]}
        path.write_text(json.dumps(raw))
        cfg = load_config(path)
        ba = StoreBootArtifacts(cfg, Store(cfg.db_path))
        try:
            target, _ = resolve_until_ready(ba, "hydra", [host, "lab", "main", "demo"])
            assert target.toplevel == FakeHydra.out_path
            assert ("/job/lab/main/demo/latest", "application/json") in FakeHydra.seen
            assert os.readlink(ba.gcroots / f"hydra-{host.replace(':', '_')}-lab-main-demo") \
                == target.toplevel
            with pytest.raises(LookupError, match="hydra_urls"):
                ba.resolve("hydra", ["evil.example:80", "lab", "main", "demo"])
            with pytest.raises(LookupError):
                ba.resolve("hydra", [host, "../x", "main", "demo"])
            with pytest.raises(LookupError):  # Hydra answers 404
                resolve_until_ready(ba, "hydra", [host, "lab", "main", "nojob"])
        finally:
            ba.close()
    finally:
        srv.shutdown()
