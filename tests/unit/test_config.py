import json
import re
from pathlib import Path

import pytest

from appliance.config.schema import example_config, iter_keys, load_config, parse_config
from appliance.errors import ConfigError
from appliance.runtime.wiring import (
    boot_url6,
    dhcp6_settings,
    http_boot_listeners,
    tftp_listeners,
    web_listeners,
)

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_valid():
    cfg = parse_config({})
    assert cfg.dhcp.mode == "authoritative"
    assert cfg.lan_ip == "10.0.0.1"
    assert cfg.boot_base_url == "http://10.0.0.1:8081"


@pytest.mark.parametrize("data, key, words", [
    ({"lan": {"adress": "10.0.0.1/24"}}, "lan.adress", "unknown key"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"lan": {"address": "10.0.0.1"}}, "lan.address", "prefix"),
    ({"lan": {"address": "10.0.0.300/24"}}, "lan.address", "not an IPv4"),
    ({"lan": {"address": "10.0.0.0/24"}}, "lan.address", "network address"),
    ({"dhcp": {"mode": "auto"}}, "dhcp.mode", "one of"),
    ({"dhcp": {"lease_seconds": "3600"}}, "dhcp.lease_seconds", "integer"),
    ({"dhcp": {"lease_seconds": True}}, "dhcp.lease_seconds", "integer"),
    ({"dhcp": {"range": ["10.0.0.50"]}}, "dhcp.range", "[first, last]"),
    ({"dhcp": {"range": ["10.0.0.50", "10.0.0.9"]}}, "dhcp.range", "before"),
    ({"dhcp": {"range": ["10.0.1.5", "10.0.1.9"]}}, "dhcp.range[0]", "outside"),
    ({"dhcp": {"range": ["10.0.0.1", "10.0.0.9"]}}, "dhcp.range", "router's own"),
    ({"web": {"listen": ["0.0.0.0:99999"]}}, "web.listen[0]", "port"),
    ({"boot": {"http_listen": "localhost:80"}}, "boot.http_listen", "not an IP"),
    ({"dns": {"upstream": ["1.1.1.x"]}}, "dns.upstream[0]", "not an IP"),
    ({"builder": {"kind": "remote"}}, "builder.uri", "required"),
    ({"lan": []}, "lan", "object"),
])
def test_bad_values_name_the_key(data, key, words):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.key == key
    assert words in str(e.value)
    assert key in str(e.value)


def test_builder_shorthand():
    assert parse_config({"builder": "local"}).builder.kind == "local"


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON.*line 1"):
        load_config(bad)


def test_example_config_is_valid(tmp_path):
    cfg = parse_config(example_config(state_dir=str(tmp_path)))
    assert cfg.lan.interface == "br-lan"
    assert cfg.dhcp.range == ["10.77.0.100", "10.77.0.200"]


def test_config_is_read_only():
    cfg = parse_config({})
    with pytest.raises(AttributeError):
        cfg.lan.address = "x"


def test_docs_describe_every_key():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", doc, re.M))
    keys = {k for k, _ in iter_keys()}
    assert keys - documented == set(), "keys missing from docs/configuration.md"
    assert documented - keys == set(), "docs/configuration.md names keys that do not exist"


def test_config_round_trips_through_json(tmp_path):
    cfg = parse_config(example_config(state_dir=str(tmp_path)))
    again = parse_config(json.loads(json.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()


def test_default_listeners_add_the_lan_ipv6_address_only_when_ipv6_runs_and_only_to_defaults():
    """Issue 16: null TFTP/HTTP boot listeners get the LAN's IPv6 address with IPv6 on;
    an explicit list is taken as written (it may hold IPv6 addresses)."""
    off = parse_config({"ra": {"enable": False}})
    assert tftp_listeners(off, None) == ["10.0.0.1:69"]
    on = parse_config({"ra": {"enable": True}})
    assert on.ipv6_lan and not off.ipv6_lan
    assert tftp_listeners(on, "fd00:1::1") == ["10.0.0.1:69", "[fd00:1::1]:69"]
    assert http_boot_listeners(on, "fd00:1::1") == ["10.0.0.1:8081", "[fd00:1::1]:8081"]
    assert boot_url6(on, "fd00:1::1") == "http://[fd00:1::1]:8081"
    explicit = parse_config({"ra": {"enable": True}, "tftp": {"listen": ["[fd00:1::7]:69"]},
                             "boot": {"http_listen": "10.0.0.1:8081"}})
    assert tftp_listeners(explicit, "fd00:1::1") == ["[fd00:1::7]:69"]
    assert boot_url6(explicit, "fd00:1::1") == ""


def test_the_web_ui_listens_on_the_lan_ipv6_address_only_when_left_to_its_default():
    """Issue 16: web.listen null gets the LAN's IPv6 address (same port) with IPv6 on;
    an explicit list is exactly what is bound, IPv6 on or not."""
    on = parse_config({"ra": {"enable": True}})
    assert web_listeners(on, "fd00:1::1") == ["10.0.0.1:8080", "[fd00:1::1]:8080"]
    assert web_listeners(parse_config({"ra": {"enable": False}}), None) == ["10.0.0.1:8080"]
    for given in (["10.0.0.1:9443"], ["[fd00:1::7]:443"], ["127.0.0.1:8080", "[::1]:8080"]):
        explicit = parse_config({"ra": {"enable": True}, "web": {"listen": given}})
        assert web_listeners(explicit, "fd00:1::1") == given


def test_dhcp6_boot_urls_follow_the_default_listeners():
    """With DHCPv6 on and the listeners left null, option 59 points at the LAN IPv6
    address for TFTP (UEFI IPv6 PXE) and HTTP boot (HTTPClient, iPXE)."""
    c = parse_config({"dhcp6": {"mode": "stateful"}})
    s = dhcp6_settings(c, "fd00:1::1/64", b"\x00\x04" + bytes(16))
    assert (s.tftp_server, s.boot_base_url) == ("fd00:1::1", "http://[fd00:1::1]:8081")
    explicit = parse_config({"dhcp6": {"mode": "stateful"}, "tftp": {"listen": ["10.0.0.1:69"]},
                             "boot": {"http_listen": "10.0.0.1:8081"}})
    s = dhcp6_settings(explicit, "fd00:1::1/64", b"\x00\x04" + bytes(16))
    assert (s.tftp_server, s.boot_base_url) == ("", "")
