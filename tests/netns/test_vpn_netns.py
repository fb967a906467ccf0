"""WireGuard end to end: `nixie serve` runs the server interface (wireguard-go here), a
peer in another namespace uses the config `nixie vpn config` printed, reaches the admin
UI through the tunnel, and not the HTTP boot port once the firewall is on; a removed
peer loses the tunnel."""

import json
import os
import subprocess
import time

import pytest

from appliance.config.schema import example_config
from lab import netns as netlab
from lab.netns import Netns, stop_processes, veth, wait_port
from tests.conftest import run_nixie
from tests.netns.routerlab import RouterLab


def parse_wg_quick(text):
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            k, v = (x.strip() for x in line.split("=", 1))
            out[f"{section}.{k}"] = v
    return out


@pytest.fixture
def lab(tmp_path):
    nss, procs = [], []
    tag = os.getpid() % 100000
    try:
        router, peer = Netns(), Netns()
        nss += [router, peer]
        veth(router, "wan0", peer, "eth0")
        router.run("ip", "link", "add", "lan0", "type", "bridge")
        router.run("ip", "link", "set", "lan0", "up")
        router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
        router.run("ip", "addr", "add", "192.0.2.1/24", "dev", "wan0")
        peer.run("ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
        cfg = example_config(state_dir=str(tmp_path / "state"), interface="lan0")
        cfg["dhcp"]["mode"] = "off"
        cfg["dns"]["enable"] = False
        cfg["wan"] = {"interface": "wan0", "address": "192.0.2.1/24"}
        cfg["vpn"] = {"enable": True, "interface": f"wgs{tag}", "listen_port": 51820,
                      "address": "10.99.0.1/24"}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        yield router, peer, path, tag, procs, tmp_path
    finally:
        stop_processes(procs)
        for ns in nss:
            ns.close()


def test_peer_reaches_admin_ui_through_the_tunnel_only(lab):
    router, peer, cfg, tag, procs, tmp = lab
    r = run_nixie("vpn", "add", "laptop", config=cfg, ns=router)
    assert r.returncode == 0, r.stderr
    r = run_nixie("vpn", "config", "laptop", "--qr", str(tmp / "laptop.svg"), config=cfg, ns=router)
    assert r.returncode == 0, r.stderr
    conf = parse_wg_quick(r.stdout)
    assert (tmp / "laptop.svg").read_text().startswith("<svg")
    assert conf["Peer.Endpoint"] == "192.0.2.1:51820"

    def start_serve():
        p = netlab.start_serve(router, cfg, tmp / "serve.log", mode="a")
        procs.append(p)
        return p

    serve = start_serve()
    assert wait_port(router, "10.77.0.1", 8080, timeout=20), (tmp / "serve.log").read_text()
    assert wait_port(router, "10.77.0.1", 8081, timeout=20)  # serve's own HTTP boot listener

    # the peer, set up from the config it was given
    wgc = f"wgc{tag}"
    keyf = tmp / "peer.key"
    keyf.touch(mode=0o600)
    keyf.write_text(conf["Interface.PrivateKey"] + "\n")
    procs.append(peer.popen("wireguard-go", "-f", wgc, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while peer.run("wg", "show", wgc, check=False).returncode != 0:
        assert time.monotonic() < deadline, "wireguard-go did not start"
        time.sleep(0.1)
    peer.run("wg", "set", wgc, "private-key", str(keyf), "peer", conf["Peer.PublicKey"],
             "endpoint", conf["Peer.Endpoint"], "allowed-ips",
             conf["Peer.AllowedIPs"].replace(" ", ""), "persistent-keepalive", "5")
    peer.run("ip", "addr", "add", conf["Interface.Address"], "dev", wgc)
    peer.run("ip", "link", "set", wgc, "up")
    peer.run("ip", "route", "add", "10.77.0.0/24", "dev", wgc)

    status = None
    deadline = time.monotonic() + 15
    while status is None and time.monotonic() < deadline:  # serve syncs peers every 2 s
        status = RouterLab.http_status(peer, "10.77.0.1", 8080, timeout=1, path="/healthz",
                                           tls=True)
    assert status is not None and " 200 " in status + " ", status
    assert RouterLab.http_status(peer, "10.77.0.1", 8081) is not None  # no firewall yet

    r = run_nixie("firewall", "apply", config=cfg, ns=router)
    assert r.returncode == 0, r.stderr
    assert RouterLab.http_status(peer, "10.77.0.1", 8080) is not None  # admin UI: VPN allowed
    assert RouterLab.http_status(peer, "10.77.0.1", 8081, timeout=1.5) is None  # boot: LAN only
    handshake = peer.run("wg", "show", wgc, "latest-handshakes").stdout.split()
    assert len(handshake) == 2 and int(handshake[1]) > 0

    # serve dies hard (its wireguard-go is left behind); a new serve takes the interface over
    serve.kill()
    serve.wait()
    start_serve()
    assert wait_port(router, "10.77.0.1", 8080, timeout=20), (tmp / "serve.log").read_text()
    status = None
    # the peer may still hold a session with the old wireguard-go: it starts a new
    # handshake only after 10 s + 5 s without an answer (WireGuard's rekey timers)
    deadline = time.monotonic() + 30
    while status is None and time.monotonic() < deadline:
        status = RouterLab.http_status(peer, "10.77.0.1", 8080, timeout=1, path="/healthz",
                                           tls=True)
    assert status is not None and " 200 " in status + " ", (tmp / "serve.log").read_text()

    r = run_nixie("vpn", "remove", "laptop", config=cfg, ns=router)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not router.run("wg", "show", f"wgs{tag}", "peers").stdout.strip():
            break
        time.sleep(0.2)
    assert RouterLab.http_status(peer, "10.77.0.1", 8080, timeout=1.5) is None
