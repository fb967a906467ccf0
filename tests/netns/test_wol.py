"""Wake-on-LAN: `nixie wol HOST` broadcasts the magic packet on the LAN, where a
machine on the same bridge (another namespace) receives it."""

import json
import sys

from appliance.config.schema import example_config
from lab.netns import Netns, bridge, bridge_port
from tests.conftest import run_nixie

RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9))
s.settimeout(10)
print("ready", flush=True)
data, addr = s.recvfrom(2048)
print(data.hex(), addr[0], flush=True)
"""


def test_wol_magic_packet_reaches_the_lan(tmp_path):
    cfg = example_config(state_dir=str(tmp_path / "state"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with Netns() as router, Netns() as machine:
        bridge(router, "br-lan", "10.77.0.1/24")
        bridge_port(router, "br-lan", "lan0", machine, address="10.77.0.50/24")
        assert run_nixie("host", "add", "m1", "--mac", "bc:24:11:aa:bb:cc", "--flake", "f",
                         config=path).returncode == 0
        rx = machine.popen(sys.executable, "-c", RECEIVER, stdout=-1, text=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            r = run_nixie("wol", "m1", config=path, ns=router)
            assert r.returncode == 0, r.stderr
            payload_hex, src = rx.stdout.readline().split()
        finally:
            rx.kill()
            rx.wait()
    payload = bytes.fromhex(payload_hex)
    assert payload == b"\xff" * 6 + bytes.fromhex("bc2411aabbcc") * 16
    assert src == "10.77.0.1"
    events = json.loads(run_nixie("events", "--kind", "host.wol", "--json", config=path).stdout)
    assert events and events[0]["mac"] == "bc:24:11:aa:bb:cc"
