"""Issue 15, finding 13: a config file that does not name the listeners gets them
on the LAN address only, never on every address. The real `nixie serve` in a
namespace with a second (WAN-side) address: the web UI, HTTP boot, DNS and TFTP
answer on the LAN address and refuse a connection to the other one; the setup
code is printed once in its log and kept 0600 in the state dir."""

from __future__ import annotations

import json
import re
import sys

from lab.netns import Netns, bridge, serving
from tests.netns.serve_lab import http_get, router_config

LAN_IP = "10.77.0.1"
WAN_IP = "192.0.2.1"

CONNECT = ("import socket,sys\n"
           "s=socket.socket(); s.settimeout(3)\n"
           "print(s.connect_ex((sys.argv[1], int(sys.argv[2]))))\n")


def listening(ns) -> set[str]:
    """Local addresses of the TCP and UDP sockets listening in `ns`."""
    out = ns.run("ss", "-Hlntu").stdout
    return {line.split()[4] for line in out.splitlines() if line.strip()}


def test_listeners_default_to_the_lan_address(tmp_path):
    path = router_config(tmp_path, dns={"enable": True})
    data = json.loads(path.read_text())
    for section, key in (("tftp", "listen"), ("boot", "http_listen"), ("web", "listen"),
                         ("dns", "listen")):
        data[section].pop(key)  # what a hand-written config that names no listener gets
    path.write_text(json.dumps(data))
    log = tmp_path / "serve.log"
    with Netns() as ns:
        bridge(ns, "br-lan", f"{LAN_IP}/24")
        ns.run("ip", "addr", "add", f"{WAN_IP}/24", "dev", "lo")
        with serving(ns, path, log, [(LAN_IP, 8080), (LAN_IP, 8081)]):
            sockets = listening(ns)
            for port in (8080, 8081, 53, 69):
                assert f"{LAN_IP}:{port}" in sockets, sockets
                assert f"0.0.0.0:{port}" not in sockets and f"*:{port}" not in sockets, sockets
            for port in (8080, 8081):
                r = ns.run(sys.executable, "-c", CONNECT, WAN_IP, str(port))
                assert r.stdout.strip() != "0", f"{WAN_IP}:{port} accepted a connection"
            assert http_get(ns, f"https://{LAN_IP}:8080/setup")[0] == 200
    text = log.read_text()
    codes = re.findall(r"setup_code=([A-Z0-9-]+)", text)
    assert len(codes) == 1, text[-2000:]
    code_file = tmp_path / "state" / "setup_code"
    assert code_file.read_text().strip() == codes[0]
    assert code_file.stat().st_mode & 0o777 == 0o600

