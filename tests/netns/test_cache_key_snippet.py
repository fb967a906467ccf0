"""The cache key as the admin is shown it is what a LAN machine needs: `nixie serve` builds a
host with the real `nix`; `nixie cache key` and `GET /api/v1/cache` show the URL, the public
key and the nix.settings snippet; a LAN machine (a namespace on the router's bridge) given
only what the snippet says runs `nix copy --from` the router's cache with signature checking
on, and gets the system; with another key it is refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

from lab import flake as labflake
from lab.netns import Netns, bridge_port
from tests.conftest import run_nixie
from tests.netns.serve_lab import admin_api_token, http_get
from tests.nixlab import NIX_EXTRA
from tests.vm.pxe_lab import add_and_build, appliance_serving


def snippet_settings(snippet: str) -> tuple[str, str]:
    """(substituter, trusted public key) as a NixOS machine would read the snippet."""
    subs = re.search(r'nix\.settings\.substituters = \[ "([^"]+)" \];', snippet)
    keys = re.search(r'nix\.settings\.trusted-public-keys = \[ "([^"]+)" \];', snippet)
    assert subs and keys, snippet
    return subs.group(1), keys.group(1)


def nix_copy(ns: Netns, url: str, key: str, dest, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NIX_CONFIG": "\n".join([
        "experimental-features = nix-command flakes", NIX_EXTRA, "require-sigs = true",
        f"trusted-public-keys = {key}", "narinfo-cache-positive-ttl = 0",
        "narinfo-cache-negative-ttl = 0"])}
    return subprocess.run(ns.argv("nix", "copy", "--from", url, "--to", f"local?root={dest}",
                                  path), capture_output=True, text=True, env=env, timeout=300)


def test_a_lan_machine_given_the_shown_snippet_copies_from_the_cache(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"cache-key {uuid.uuid4()}")
    with appliance_serving(tmp_path) as (ns, cfg_path, cfg):
        add_and_build(cfg_path, flake, {"demo": "52:54:00:4e:58:41"})
        toplevel = json.loads(run_nixie("host", "show", "demo", "--json", config=cfg_path).stdout
                              )["generations"][0]["toplevel"]
        r = run_nixie("cache", "key", "--json", config=cfg_path)
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        human = run_nixie("cache", "key", config=cfg_path).stdout
        assert shown["snippet"] in human and shown["public_key"] in human
        status, body = http_get(ns, f"http://{cfg['web']['listen'][0]}/api/v1/cache",
                                admin_api_token(cfg_path))
        assert status == 200 and json.loads(body) == shown
        url, key = snippet_settings(shown["snippet"])
        assert (url, key) == (shown["url"], shown["public_key"])

        client = Netns()
        try:
            bridge_port(ns, "br-lan", "vk0", client, "k0", address="10.77.0.61/24")
            r = nix_copy(client, url, key, tmp_path / "dest", toplevel)
            assert r.returncode == 0, r.stderr
            assert (tmp_path / "dest" / toplevel.lstrip("/") / "init").read_bytes() == \
                open(f"{toplevel}/init", "rb").read()
            other = nix_copy(client, url, "someone-else:" + "A" * 43 + "=", tmp_path / "dest2",
                             toplevel)
            assert other.returncode != 0 and "signature" in other.stderr.lower(), other.stderr
        finally:
            client.close()
