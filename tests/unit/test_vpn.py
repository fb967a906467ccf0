"""WireGuard peers: real wg keys, 0600 key files, addresses, client config, QR SVG, no
secrets in logs."""

import logging
import stat
import xml.etree.ElementTree as ET

import pytest

from appliance.config.schema import example_config, parse_config
from appliance.errors import Conflict, InvalidInput
from appliance.router import vpn
from appliance.state.db import Store


@pytest.fixture
def env(state_dir):
    c = example_config(state_dir=str(state_dir))
    c["vpn"] = {"enable": True, "address": "10.99.0.1/29", "endpoint": "203.0.113.5:51820"}
    return parse_config(c), Store(state_dir / "nixie.db").conn()


def test_peers_keys_and_client_config(env, caplog):
    cfg, conn = env
    caplog.set_level(logging.DEBUG)
    a = vpn.add_peer(conn, cfg, "laptop")
    b = vpn.add_peer(conn, cfg, "phone")
    assert (a["address"], b["address"]) == ("10.99.0.2", "10.99.0.3")
    row = vpn.get_peer(conn, "laptop")
    key_file = vpn.vpn_dir(cfg) / "peers" / f"{row['id']}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    private = key_file.read_text().strip()
    assert vpn.public_key(private) == a["public_key"]
    server = vpn.server_key_file(cfg)
    assert stat.S_IMODE(server.stat().st_mode) == 0o600

    text = vpn.client_config(conn, cfg, "laptop")
    assert f"PrivateKey = {private}" in text
    assert "Address = 10.99.0.2/29" in text
    assert f"PublicKey = {vpn.server_public_key(cfg)}" in text
    assert "Endpoint = 203.0.113.5:51820" in text
    assert "AllowedIPs = 10.99.0.0/29, 10.77.0.0/24" in text
    assert "DNS = 10.77.0.1, lab.nixie" in text  # where the DNS server listens (dns.listen)

    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert private not in logged and server.read_text().strip() not in logged


def test_addresses_run_out_and_names_are_unique(env):
    cfg, conn = env
    for i in range(5):  # /29: .2 to .6
        vpn.add_peer(conn, cfg, f"p{i}")
    with pytest.raises(Conflict, match="no free address"):
        vpn.add_peer(conn, cfg, "one-too-many")
    with pytest.raises(Conflict):
        vpn.add_peer(conn, cfg, "p0")
    vpn.remove_peer(conn, "p3")
    assert vpn.add_peer(conn, cfg, "again")["address"] == "10.99.0.5"
    assert [p["name"] for p in vpn.list_peers(conn)] == ["p0", "p1", "p2", "p4", "again"]


def test_own_public_key_and_bad_input(env):
    cfg, conn = env
    pub = vpn.public_key(vpn.generate_private_key())
    p = vpn.add_peer(conn, cfg, "router2", public=pub)
    assert p["public_key"] == pub and not p["has_private_key"]
    with pytest.raises(Conflict, match="brought its own key"):
        vpn.client_config(conn, cfg, "router2")
    with pytest.raises(InvalidInput):
        vpn.add_peer(conn, cfg, "x", public="not-a-key")
    with pytest.raises(InvalidInput):
        vpn.add_peer(conn, cfg, "../etc")


def test_qr_svg_is_an_svg_sized_for_the_text(env):
    cfg, conn = env
    vpn.add_peer(conn, cfg, "laptop")
    svg = vpn.qr_svg(vpn.client_config(conn, cfg, "laptop"))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    side = int(root.get("viewBox").split()[2])
    assert side >= 4 * 2 + 41  # a ~250-byte config needs at least version 6 (41 modules)
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) == 1
