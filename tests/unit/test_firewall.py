"""The nftables generator: what the ruleset allows, from config."""

import ipaddress
import shutil
import subprocess

import pytest

from appliance.config.schema import example_config, parse_config
from appliance.domain.ipv6 import lan_address6
from appliance.router.firewall import FirewallError, FirewallSpec, render
from appliance.state.db import Store
from tests.golden import assert_golden


def cfg(**over):
    c = example_config(interface="br-lan", address="10.77.0.1/24")
    c["wan"] = {"interface": "wan0", "address": None, "nat": True}
    for k, v in over.items():
        c[k] = {**c.get(k, {}), **v}
    return parse_config(c)


def rule_lines(text, chain):
    body = text.split(f"chain {chain} {{")[1].split("}\n")[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_spec_from_config_collects_ports():
    s = FirewallSpec.from_config(cfg())
    assert s.lan_if == "br-lan" and s.lan_net == "10.77.0.0/24" and s.wan_if == "wan0"
    assert s.admin_tcp == (22, 8080)
    assert s.boot_tcp == (8081,) and s.boot_udp == (67, 69, 4011) and s.dns_port == 53
    assert s.vpn_if is None


def test_admin_only_from_lan_and_vpn_boot_only_from_lan():
    text = render(FirewallSpec.from_config(cfg(vpn={"enable": True, "interface": "wg7"})))
    inp = rule_lines(text, "input")
    assert inp[0] == "type filter hook input priority filter; policy drop;"
    assert 'iifname { "br-lan", "wg7" } tcp dport { 22, 8080 } accept comment "admin UI and SSH"' in inp
    assert 'iifname "br-lan" udp dport { 67, 69, 4011 } accept comment "DHCP, proxyDHCP, TFTP"' in inp
    assert 'iifname "br-lan" tcp dport 8081 accept comment "HTTP boot"' in inp
    assert 'iifname "wan0" udp dport 51820 accept comment "WireGuard"' in inp
    assert inp[-1] == "counter drop"
    # nothing accepts on the WAN except DHCP replies and WireGuard
    wan_accepts = [r for r in inp if '"wan0"' in r]
    assert len(wan_accepts) == 2
    assert "ct state established,related accept" in inp
    post = rule_lines(text, "postrouting")
    assert 'oifname "wan0" ip saddr { 10.77.0.0/24, 10.99.0.0/24 } masquerade' in post


def test_no_wan_no_nat_and_nat_off():
    no_wan = render(FirewallSpec("br-lan", "10.77.0.0/24"))
    assert "masquerade" not in no_wan and "postrouting" not in no_wan
    assert rule_lines(no_wan, "forward")[-1] == "counter drop"
    off = render(FirewallSpec.from_config(cfg(wan={"nat": False})))
    assert "masquerade" not in off
    assert 'iifname "br-lan" oifname "wan0" accept' in rule_lines(off, "forward")


def test_replaces_the_table_atomically_in_one_file():
    text = render(FirewallSpec.from_config(cfg()))
    head = text.splitlines()[1:4]
    assert head == ["table inet nixie", "delete table inet nixie", "table inet nixie {"]


def test_dhcp_off_drops_dhcp_ports_but_keeps_tftp():
    s = FirewallSpec.from_config(cfg(dhcp={"mode": "off"}))
    assert s.boot_udp == (69,)


@pytest.mark.parametrize("bad", ['eth0"; flush ruleset', "a" * 16, "", "x y"])
def test_interface_names_cannot_inject(bad):
    with pytest.raises(FirewallError):
        render(FirewallSpec(bad, "10.77.0.0/24"))


@pytest.mark.skipif(not shutil.which("nft"), reason="nft not installed")
def test_nft_parses_the_generated_ruleset():
    """`nft -c` (check only, needs no privileges to parse? it does need CAP_NET_ADMIN on some
    kernels; skip then) accepts what we render."""
    text = render(FirewallSpec.from_config(cfg(vpn={"enable": True})))
    r = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert r.returncode == 0, r.stderr


def test_ipv6_on_the_lan_adds_icmpv6_dhcpv6_and_the_prefix_check(state_dir):
    """RA on (the default) with a known prefix: the IPv6 rules come before the services
    and name the LAN prefix; without a known prefix, or with RA and DHCPv6 off, none."""
    v6 = FirewallSpec.from_config(cfg(lan={"address6": "fd00:77::1/64"}, dhcp6={"mode": "stateless"}))
    assert v6.lan_net6 == "fd00:77::/64" and v6.dhcp6
    assert FirewallSpec.from_config(cfg(lan={"address6": "fd00:77::1/64"})).dhcp6 is False
    off = cfg(lan={"address6": "fd00:77::1/64"}, ra={"enable": False})
    assert FirewallSpec.from_config(off).lan_net6 is None
    assert "icmpv6" not in render(FirewallSpec.from_config(off))
    # the stored ULA when lan.address6 is null (made once, the same one the RA serves)
    conn = Store(state_dir / "nixie.db").conn()
    ula = FirewallSpec.from_config(cfg(), conn=conn).lan_net6
    assert ula is not None and ula.startswith("fd") and ula.endswith("::/64")
    assert ula == str(ipaddress.IPv6Interface(lan_address6(conn, None)).network)

    text = render(v6)
    assert_golden("firewall-ipv6.nft", text)
    inp = rule_lines(text, "input")
    nd = 'ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept ' \
         'comment "IPv6 neighbour discovery"'
    check = ('iifname "br-lan" ip6 saddr != { ::, fe80::/10, fd00:77::/64 } counter drop '
             'comment "IPv6 from the LAN only from its prefix"')
    admin = 'iifname "br-lan" tcp dport { 22, 8080 } accept comment "admin UI and SSH"'
    assert inp.index(nd) < inp.index(check) < inp.index(admin)
    assert 'iifname "br-lan" udp dport 547 accept comment "DHCPv6"' in inp
    assert 'iifname "wan0" ip6 hoplimit 255 icmpv6 type nd-router-advert accept ' \
           'comment "router advertisements on the WAN"' in inp
    assert [r for r in inp if "nd-router-solicit" in r] == [
        'iifname "br-lan" ip6 hoplimit 255 icmpv6 type nd-router-solicit accept '
        'comment "router solicitations"']


@pytest.mark.skipif(not shutil.which("nft"), reason="nft not installed")
def test_nft_parses_the_ipv6_ruleset():
    text = render(FirewallSpec.from_config(cfg(lan={"address6": "fd00:77::1/64"},
                                               dhcp6={"mode": "stateful"})))
    r = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert r.returncode == 0, r.stderr
def test_boot_port_beyond_the_lan_only_when_enabled():
    """boot.remote opens HTTP boot (only its TCP port) on the WAN and VPN; off, nothing."""
    off = rule_lines(render(FirewallSpec.from_config(cfg(vpn={"enable": True, "interface": "wg7"}))),
                     "input")
    assert not [r for r in off if "8081" in r and '"wan0"' in r]
    text = render(FirewallSpec.from_config(cfg(vpn={"enable": True, "interface": "wg7"},
                                               boot={"remote": True})))
    inp = rule_lines(text, "input")
    assert ('iifname { "wg7", "wan0" } tcp dport 8081 accept comment '
            '"HTTP boot beyond the LAN (media tokens)"') in inp
    assert not [r for r in inp if '"wan0"' in r and "dport { 67" in r]  # no DHCP/TFTP there
    assert_golden("firewall-boot-remote.nft", text)
