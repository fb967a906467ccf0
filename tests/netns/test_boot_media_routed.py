"""Routed boot (issue 20), from a second segment routed through the router: a machine
there has a plain static address (no DHCP server, no boot options) and fetches what its
generic boot media's iPXE script fetches, with curl, from a real `nixie serve` with its
firewall on.

- boot.remote off: the boot port does not answer from that segment (the firewall);
- `nixie config set boot.remote true`: it answers, live; the media's chain URL (read from
  the ISO `nixie media --generic` wrote, `${net0/mac:hexhyp}` filled in as iPXE would)
  gets the host's script, a per-host token gets it without a MAC;
- the plain `/boot/<mac>.ipxe` without a token is refused there (403), and so is a
  revoked token; the LAN still boots without one.

This is curl, not a VM: the VM proof of the media is tests/vm/test_boot_media.py.
"""

from __future__ import annotations

import json
import re
import subprocess

from appliance.config.schema import example_config
from lab.netns import serving
from tests.conftest import run_nixie, wait_for
from tests.netns.test_firewall_netns import lab  # noqa: F401 - the router lab fixture

MAC = "52:54:00:4e:58:71"
BASE = "http://10.77.0.1:8081"


def curl(ns, url: str, timeout: float = 3) -> tuple[int | None, str]:
    r = ns.run("curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}", url, check=False,
               timeout=timeout + 10)
    if r.returncode != 0:
        return None, ""
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def test_generic_media_boots_across_the_router_with_a_token_only(lab, tmp_path):  # noqa: F811
    cfg = example_config(state_dir=str(tmp_path / "state"), interface="lan0")
    cfg["dhcp"]["mode"] = "off"
    cfg["dns"]["enable"] = False
    cfg["wan"] = {"interface": "wan0", "address": "192.0.2.1/24", "nat": True}
    cfg["firewall"] = {"enable": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    remote = lab.wan  # the second segment: 192.0.2.10, a static address, nothing else
    remote.run("ip", "route", "add", "10.77.0.0/24", "via", "192.0.2.1")

    with serving(lab.router, path, tmp_path / "serve.log", [("10.77.0.1", 8081)], timeout=30):
        assert run_nixie("host", "add", "far1", "--mac", MAC, "--flake", "github:me/infra",
                         config=path).returncode == 0
        iso = tmp_path / "generic.iso"
        r = run_nixie("media", "--generic", "--format", "iso", "-o", str(iso), config=path)
        assert r.returncode == 0, r.stderr
        subprocess.run(["xorriso", "-indev", str(iso), "-osirrox", "on", "-extract",
                        "/nixie.ipxe", str(tmp_path / "nixie.ipxe")], capture_output=True, check=True)
        script = (tmp_path / "nixie.ipxe").read_text()
        chain = re.search(r"chain (\S+)", script).group(1)
        assert chain.startswith(f"{BASE}/boot/m/") and chain.endswith("?mac=${mac}")
        url = chain.replace("${mac}", MAC)  # iPXE's ${mac} and GRUB's: colon form

        # the firewall keeps the boot port closed beyond the LAN until boot.remote
        assert curl(remote, url, timeout=2)[0] is None
        assert curl(lab.client, f"{BASE}/boot/{MAC}.ipxe")[0] == 200  # the LAN: no token
        assert run_nixie("config", "set", "boot.remote=true", config=path).returncode == 0
        assert wait_for(lambda: curl(remote, url, timeout=1)[0] is not None, timeout=20), \
            (tmp_path / "serve.log").read_text()[-2000:]

        status, text = curl(remote, url)
        assert status == 200 and "far1: no system built yet" in text, text
        assert f"chain --replace --autofree {url.split('?')[0]}?mac={MAC.replace(':', '-')}" in text
        # without a token, beyond the LAN: refused
        assert curl(remote, f"{BASE}/boot/{MAC}.ipxe")[0] == 403
        assert curl(remote, f"{BASE}/boot/m/{'A' * 32}.ipxe")[0] == 403
        # a per-host token names the host without any MAC
        r = run_nixie("media", "far1", "--format", "efi", "-o", str(tmp_path / "far1.efi"),
                      config=path)
        assert r.returncode == 0, r.stderr
        efi = (tmp_path / "far1.efi").read_bytes()
        token = re.search(rb"/boot/m/([A-Za-z0-9_-]+)\.ipxe", efi).group(1).decode()
        status, text = curl(remote, f"{BASE}/boot/m/{token}.grub")
        assert status == 200 and "far1: no system built yet" in text
        # revoked: refused from then on
        tokens = json.loads(run_nixie("media", "--list", "--json", config=path).stdout)
        assert {t["host"] for t in tokens} == {None, "far1"}
        for t in tokens:
            assert run_nixie("media", "--revoke", str(t["id"]), config=path).returncode == 0
        assert curl(remote, url)[0] == 403
        assert curl(remote, f"{BASE}/boot/m/{token}.grub")[0] == 403
        events = json.loads(run_nixie("events", "--json", "--limit", "200", config=path).stdout)
        assert any(e["kind"] == "boot.media_refused" and e["ip"] == "192.0.2.10" for e in events)
        # boot.remote off again: closed again
        assert run_nixie("config", "set", "boot.remote=false", config=path).returncode == 0
        assert wait_for(lambda: curl(remote, url, timeout=1)[0] is None, timeout=20)
