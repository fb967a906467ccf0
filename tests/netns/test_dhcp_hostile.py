"""Finding 3 of issue 15 against the real `nixie serve`: about a hundred forged DHCP
packets (DECLINEs of addresses never offered to their sender, INIT-REBOOT and RENEW
REQUESTs from clients the server never saw, one client declining everything it is
offered) get no answer and leave the pool as it was, also after a restart: a real
udhcpc and a real dhclient still get addresses."""

from __future__ import annotations

import json
import sys

import pytest

from tests.netns.dhcp_lab import Lan, in_range

FIRST, LAST = "10.77.0.100", "10.77.0.129"  # 30 addresses


@pytest.fixture
def lan(tmp_path):
    lan = Lan(tmp_path, dhcp_range=(FIRST, LAST))
    try:
        yield lan
    finally:
        lan.close()


def test_forged_declines_and_unknown_requests_do_not_drain_the_pool(lan):
    lan.start()
    r = lan.client.run(sys.executable, "-m", "tests.netns.dhcp_forge", "eth0", lan.ip, FIRST,
                       LAST, timeout=60)
    forge = json.loads(r.stdout.strip().splitlines()[-1])
    assert forge["sent"] >= 96
    # the forged REQUESTs got no ACK (nor anything else: RFC 2131 4.3.2 silence)
    assert forge["replies_to_forged"] == [], forge
    assert len(forge["declined"]) == 6  # the decliner was offered an address every time

    leases = lan.leases()
    declined = {ip: row for ip, row in leases.items() if row["state"] == "declined"}
    # only the decliner's own DECLINEs count, and at most two of them at a time
    assert len(declined) == 2 and {row["mac"] for row in declined.values()} == \
        {forge["decliner_mac"]}
    assert not [row for row in leases.values() if row["state"] == "bound"], leases
    stats = lan.dhcp_stats()
    dropped = stats["dropped"]
    assert dropped["decline_unknown"] == 30 and dropped["init_reboot_unknown"] == 30
    assert dropped["renew_unknown"] == 30 and dropped["decline_over_limit"] == 4

    # a restart loads the same leases: still nothing drained
    lan.stop()
    lan.start()
    res = lan.udhcpc()
    got = [ln.split() for ln in (lan.tmp / "udhcpc.out").read_text().splitlines()
           if ln.startswith("bound")]
    assert res.returncode == 0 and got and in_range(got[-1][1], FIRST, LAST), res.stderr
    assert got[-1][1] not in declined
    lan.client.run("ip", "link", "add", "mv1", "link", "eth0", "type", "macvlan", "mode", "bridge")
    lan.client.run("ip", "link", "set", "mv1", "up")
    lines = lan.dhclient("mv1")
    bound = [ln.split() for ln in lines if ln.startswith("BOUND")]
    assert bound and in_range(bound[0][1], FIRST, LAST) and bound[0][1] != got[-1][1], lines
