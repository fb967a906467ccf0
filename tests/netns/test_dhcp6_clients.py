"""Real IPv6 clients against `nixie serve` in namespaces: dhclient -6 (stateful and
stateless) and rdisc6 seeing our router advertisement."""

from __future__ import annotations

import ipaddress
import time

import pytest

from tests.netns.dhcp6_lab import Lan6

ROUTER6 = "fd00:77::1"


@pytest.fixture
def lan6(tmp_path):
    lan = Lan6(tmp_path, dhcp6={"dns_servers": [ROUTER6], "preferred_seconds": 60,
                                "valid_seconds": 120})
    try:
        yield lan
    finally:
        lan.close()


def test_dhclient6_stateful_gets_renews_and_keeps_its_address_and_dns(lan6):
    lan6.start()
    proc, out = lan6.dhclient6()
    bound = lan6.wait_line(out, "BOUND6", 30)
    addr, dns = bound[1], bound[2]
    assert ipaddress.IPv6Address(addr) in ipaddress.IPv6Network("fd00:77::1:0/112")
    assert dns == ROUTER6 and bound[3] == "lab.nixie."
    # the kernel has it, and the lease is in SQLite, tied to the client's MAC (DUID-LLT)
    assert any(a.startswith(addr + "/") for a in lan6.client_addresses6())
    row = lan6.leases6()[addr]
    assert row["state"] == "bound" and row["mac"] == lan6.mac()
    first_expiry = row["expires"]
    # T1 = preferred / 2 = 30 s: dhclient renews, into the same address
    n = len(out.read_text().splitlines())
    renew = lan6.wait_line(out, "RENEW6", 50, after=n)
    assert renew[1] == addr and renew[2] == ROUTER6
    assert lan6.leases6()[addr]["expires"] > first_expiry
    # a restarted client (same DUID, its lease file) keeps its address
    proc.terminate()
    proc.wait(10)
    n = len(out.read_text().splitlines())
    lan6.dhclient6()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [ln.split() for ln in out.read_text().splitlines()[n:]]
        got = [ln for ln in lines if ln[:1] in (["REBOOT6"], ["BOUND6"]) and len(ln) > 1]
        if got:
            assert got[0][1] == addr, lines
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the restarted client got no address: " + out.read_text())
    stats = lan6.dhcp6_stats()
    assert stats["received"].get("solicit", 0) >= 1 and stats["received"].get("renew", 0) >= 1


def test_dhclient6_stateless_gets_dns_servers_and_the_ra_gives_the_prefix(tmp_path):
    lan = Lan6(tmp_path, address6=None, dhcp6={"mode": "stateless", "dns_servers": [ROUTER6]})
    try:
        lan.start()
        _, out = lan.dhclient6("-S", name="stateless")
        # dhclient 4.4 reports an information reply as INFORM6, or as RENEW6 (no address)
        info = lan.wait_line(out, ("INFORM6", "RENEW6"), 30)
        assert info[1:] == [ROUTER6, "lab.nixie."], info
        assert lan.leases6() == {}
        # the generated ULA is kept in the settings and advertised; M off, O on
        ula = lan.setting("lan.ula")
        prefix = ipaddress.IPv6Interface(ula).network
        assert str(prefix).startswith("fd") and prefix.prefixlen == 64
        assert any(a.startswith(f"{ula.split('/')[0]}/") for a in
                   lan.router.run("ip", "-6", "-o", "addr", "show", "dev", "lan0").stdout.split())
        ra = lan.client.run("rdisc6", "-1", "-w", "3000", "eth0").stdout
        assert "Stateful address conf.    :           No" in ra, ra
        assert "Stateful other conf.      :          Yes" in ra, ra
        assert f"Prefix                   : {prefix}" in ra, ra
        assert f"Recursive DNS server     : {ROUTER6}" in ra, ra
        assert "DNS search list          : lab.nixie" in ra, ra
        # SLAAC: the client's kernel made an address in the prefix
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mine = [a for a in lan.client_addresses6()
                    if ipaddress.IPv6Interface(a).network == prefix]
            if mine:
                break
            time.sleep(0.2)
        assert mine, lan.client_addresses6()
    finally:
        lan.close()


def test_rdisc6_sees_the_stateful_flags_and_serve_stops_with_router_lifetime_zero(tmp_path):
    lan = Lan6(tmp_path, ra={"router_lifetime_seconds": 600, "mtu": 1400})
    try:
        lan.start()
        ra = lan.client.run("rdisc6", "-1", "-w", "3000", "eth0").stdout
        assert "Stateful address conf.    :          Yes" in ra, ra
        assert "Router lifetime           :          600 (0x00000258) seconds" in ra, ra
        assert "Prefix                   : fd00:77::/64" in ra, ra
        assert "MTU                      :         1400 bytes (valid)" in ra, ra
        assert ra.rstrip().splitlines()[-1].strip().startswith("from fe80::"), ra
        # the client takes us as its default router; after serve stops, it no longer does
        deadline = time.monotonic() + 10
        while "default" not in lan.client.run("ip", "-6", "route").stdout:
            assert time.monotonic() < deadline, lan.client.run("ip", "-6", "route").stdout
            time.sleep(0.2)
        lan.stop()
        deadline = time.monotonic() + 10
        while "default" in lan.client.run("ip", "-6", "route").stdout:
            assert time.monotonic() < deadline, "the default route stayed after the final RA"
            time.sleep(0.2)
    finally:
        lan.close()
