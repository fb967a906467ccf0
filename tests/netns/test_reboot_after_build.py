"""Rebuild and reboot against a running `nixie serve`: `nixie build HOST --reboot` queues a
real nix build; when it succeeds the runtime's watcher boots the host from the network
exactly once. The host has no BMC, so that is Wake-on-LAN: the magic packet reaches a
machine on the LAN bridge (another namespace). A failing build reboots nothing and says so."""

from __future__ import annotations

import json
import sys
import time
import uuid

from lab import flake as labflake
from lab.netns import Netns, bridge, bridge_port, serving
from tests.conftest import run_nixie
from tests.nixlab import lab_config

MAC = "52:54:00:5e:00:21"
# prints every magic packet that arrives on UDP 9 until killed
RECEIVER = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    print(data.hex(), addr[0], flush=True)
"""


def test_build_reboot_wakes_the_host_once_and_a_failed_build_does_not(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"reboot-test {uuid.uuid4()}")
    cfg_path, _cfg = lab_config(tmp_path)
    with Netns() as router, Netns() as machine:
        bridge(router, "br-lan", "10.77.0.1/24")
        bridge_port(router, "br-lan", "lan0", machine, address="10.77.0.50/24")

        def nixie(*args, timeout=120):
            return run_nixie(*args, config=cfg_path, ns=router, timeout=timeout)

        rx = machine.popen(sys.executable, "-c", RECEIVER, stdout=-1, text=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            with serving(router, cfg_path, tmp_path / "serve.log", [("10.77.0.1", 8080)]):
                assert nixie("flake", "add", str(flake)).returncode == 0
                assert nixie("flake", "refresh").returncode == 0
                assert nixie("host", "add", "demo", "--mac", MAC,
                             "--flake", str(flake)).returncode == 0

                r = nixie("build", "demo", "--reboot", "--wait", "--timeout", "240", "--json",
                          timeout=300)
                assert r.returncode == 0, r.stdout + r.stderr
                good = json.loads(r.stdout)
                assert good["status"] == "succeeded"
                # the watcher wakes the host: the packet arrives on the LAN
                payload_hex, src = rx.stdout.readline().split()
                assert bytes.fromhex(payload_hex) == b"\xff" * 6 + bytes.fromhex(
                    MAC.replace(":", "")) * 16
                assert src == "10.77.0.1"

                labflake.break_flake(flake)
                r = nixie("build", "demo", "--reboot", "--wait", "--timeout", "240", "--json",
                          timeout=300)
                assert r.returncode == 1
                bad = json.loads(r.stdout)
                assert bad["status"] == "failed"
                skipped = wait_for_event(nixie, "build.reboot_skipped")
                assert skipped["data"]["build"] == bad["id"]
                evs = json.loads(nixie("events", "--host", "demo", "--json").stdout)
        finally:
            rx.kill()
            out_rest = rx.communicate()[0]
    kinds = [e["kind"] for e in evs]
    assert kinds.count("build.reboot") == 1 and kinds.count("host.wol") == 1, kinds
    assert [e["data"]["build"] for e in evs if e["kind"] == "build.reboot"] == [good["id"]]
    # nothing more reached the machine: one build succeeded, one boot
    assert out_rest.strip() == "", out_rest


def wait_for_event(nixie, kind: str, within: float = 60) -> dict:
    """The newest event of `kind`, polling (the watcher looks every second)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = json.loads(nixie("events", "--kind", kind, "--json").stdout)
        if got:
            return got[0]
        time.sleep(0.5)
    raise AssertionError(f"no {kind} event within {within} s")
