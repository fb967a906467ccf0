"""bench/boot's pure helpers: logs and events into boot-step times (no timing asserted)."""

from __future__ import annotations

from bench.boot.steps import (
    BootTimes,
    FirstSeen,
    appliance_steps,
    median_or_none,
    parse_event_data,
    parse_nginx_log,
    parse_tcpdump,
    phase,
    phase_table,
    ratio,
    reference_steps,
    step_table,
    wire_steps,
)

TCPDUMP = """\
990.100000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    10.77.0.1.67 > 10.77.0.150.68: BOOTP/DHCP, Reply, length 300, xid 0x1
\t    DHCP-Message (53), length 1: ACK
1001.000000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 400)
    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 52:54:00:4e:58:21, length 372
\t    DHCP-Message (53), length 1: Discover
1001.500000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    10.77.0.1.67 > 10.77.0.150.68: BOOTP/DHCP, Reply, length 300, xid 0x2
\t    DHCP-Message (53), length 1: Offer
1001.900000 IP truncated packet without options
1002.250000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    10.77.0.1.67 > 10.77.0.150.68: BOOTP/DHCP, Reply, length 300, xid 0x2
\t    DHCP-Message (53), length 1: ACK
1003.000000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 74)
    10.77.0.150.1025 > 10.77.0.1.69: [udp sum ok] TFTP, length 46, RRQ "snponly.efi" octet tsize 0
1003.100000 ARP, Request who-has 10.77.0.1 tell 10.77.0.150, length 28
1009.000000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    10.77.0.1.67 > 10.77.0.150.68: BOOTP/DHCP, Reply, length 300, xid 0x4
\t    DHCP-Message (53), length 1: ACK
1015.000000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    10.77.0.1.67 > 10.77.0.150.68: BOOTP/DHCP, Reply, length 300, xid 0x3
\t    DHCP-Message (53), length 1: ACK
"""


def test_tcpdump_dhcp_message_types_and_wire_steps():
    pkts = parse_tcpdump(TCPDUMP)
    assert pkts == [(990.1, "ACK"), (1001.0, "DISCOVER"), (1001.5, "OFFER"), (1002.25, "ACK"),
                    (1003.0, "TFTP-RRQ"), (1009.0, "ACK"), (1015.0, "ACK")]
    # the ACK before power-on is a previous boot's; the last ACK is stage 2's
    assert wire_steps(pkts, 1000.0) == {"dhcp": 1002.25, "tftp": 1003.0, "lease2": 1015.0}
    assert wire_steps(pkts[:4], 1000.0) == {"dhcp": 1002.25, "tftp": None, "lease2": None}
    assert wire_steps(pkts[:2], 1000.0) == {"dhcp": None, "tftp": None, "lease2": None}

B = "dk2c5kzcm65ll4dnbq4drzh074h3ahhy-nixos-system-demo"


def test_nginx_log_lines_parse_and_junk_is_skipped():
    text = (f"1000.100 GET /boot/52:54:00:4e:58:21.ipxe 200 812\n"
            f"garbage line\n"
            f"1001.500 GET /boot/{B}/kernel 200 5000000\n"
            f"1000.050 GET /boot/{B}/kernel 404 0\n")
    reqs = parse_nginx_log(text)
    assert [(r.ts, r.method, r.status, r.sent) for r in reqs] == [
        (1000.1, "GET", 200, 812), (1001.5, "GET", 200, 5000000), (1000.05, "GET", 404, 0)]
    assert reqs[1].uri == f"/boot/{B}/kernel"


def test_reference_steps_ignore_earlier_requests_and_errors():
    log = "\n".join([
        f"990.000 GET /boot/{B}/initrd 200 13800000",   # the export, before power-on
        "1003.000 GET /boot/52:54:00:4e:58:21.ipxe 200 812",
        f"1003.500 GET /boot/{B}/kernel 404 0",          # an error is not the step
        f"1004.000 GET /boot/{B}/kernel 200 5000000",
        f"1006.000 GET /boot/{B}/initrd 200 13800000",
        "1020.000 POST /api/v1/agent/events 200 14",
    ])
    steps = reference_steps(parse_nginx_log(log), 1000.0, B)
    assert steps == {"script": 1003.0, "kernel": 1004.0, "initrd": 1006.0, "booted": 1020.0}


def test_reference_steps_missing_post_is_none():
    steps = reference_steps(parse_nginx_log("1003.000 GET /boot/x.ipxe 200 1"), 1000.0, B)
    assert steps["booted"] is None and steps["kernel"] is None and steps["script"] == 1003.0


def test_appliance_steps_take_completed_transfers_after_power_on():
    events = [parse_event_data(e) for e in [
        {"ts": 1020.0, "kind": "host.booted"},
        {"ts": 999.0, "kind": "boot.script"},   # the export's fetch, before power-on
        {"ts": 1002.0, "kind": "boot.dhcp"},
        {"ts": 1003.0, "kind": "boot.script"},
        {"ts": 1003.2, "kind": "boot.kernel", "data": '{"status": "started"}'},
        {"ts": 1004.0, "kind": "boot.kernel", "data": {"status": "completed"}},
        {"ts": 1004.1, "kind": "boot.initrd", "data": '{"status": "started"}'},
        {"ts": 1006.0, "kind": "boot.initrd", "data": '{"status": "completed"}'},
        {"ts": 1012.0, "kind": "boot.dhcp"},
    ]]
    assert appliance_steps(events, 1000.0) == {"script": 1003.0, "kernel": 1004.0,
                                               "initrd": 1006.0, "booted": 1020.0}


def test_event_data_that_is_not_json_becomes_empty():
    assert parse_event_data({"kind": "x", "data": "{not json"})["data"] == {}
    assert parse_event_data({"kind": "x", "data": None})["data"] == {}


def test_first_seen_keeps_first_time_and_counts_new_matches():
    fs = FirstSeen({"ack": r"DHCPACK\("})
    fs.feed("nothing yet", 1.0)
    fs.feed("DHCPACK(br-lan) 10.77.0.100", 2.0)
    fs.feed("DHCPACK(br-lan) 10.77.0.100", 3.0)
    fs.feed("DHCPACK(br-lan) 10.77.0.100\nDHCPACK(br-lan) 10.77.0.100", 4.0)
    assert fs.first == {"ack": 2.0}
    assert fs.last == {"ack": 4.0} and fs.counts == {"ack": 2}


def test_medians_ratio_and_table():
    boots = [BootTimes("ours", 0.0, {"dhcp": 2.0, "booted": 30.0}),
             BootTimes("ours", 100.0, {"dhcp": 102.0, "booted": 132.0}),
             BootTimes("reference", 200.0, {"dhcp": 201.0, "booted": 230.0, "kernel": None})]
    assert boots[1].total == 32.0 and boots[2].rel("kernel") is None
    assert median_or_none([1.0, None, 3.0]) == 2.0 and median_or_none([None]) is None
    assert ratio(31.0, 30.0) == 31.0 / 30.0 and ratio(None, 30.0) is None and ratio(1.0, 0.0) is None
    table = step_table(boots)
    lines = table.splitlines()
    assert lines[0].split()[-3:] == ["ours", "reference", "ratio"]
    booted = next(ln for ln in lines if ln.startswith("booted"))
    assert booted.split()[1:] == ["31.00", "30.00", "1.033"]
    assert not any(ln.startswith("kernel") for ln in lines)  # no stack saw it: no row


def test_table_beside_the_reference_with_router_advertisements():
    boots = [BootTimes("ours", 0.0, {"booted": 12.0}),
             BootTimes("reference", 100.0, {"booted": 124.0}),
             BootTimes("reference-ra", 200.0, {"booted": 215.0})]
    lines = step_table(boots).splitlines()
    assert lines[0].split()[-5:] == ["ours", "reference", "reference-ra", "/reference",
                                     "/reference-ra"]
    booted = next(ln for ln in lines if ln.startswith("booted"))
    assert booted.split()[1:] == ["12.00", "24.00", "15.00", "0.500", "0.800"]
    rows = phase_table(boots, "reference-ra").splitlines()
    assert rows[0].split()[-3:] == ["ours", "reference-ra", "diff"]


def test_phases_are_spans_between_steps():
    ours = BootTimes("ours", 100.0, {"dhcp": 105.0, "script": 118.0, "initrd": 120.0,
                                     "stage1": 125.0, "booted": 126.0})
    ref = BootTimes("reference", 200.0, {"dhcp": 205.5, "script": 218.0, "initrd": 221.0,
                                         "stage1": 226.0, "booted": 227.5})
    assert phase(ours, None, "dhcp") == 5.0 and phase(ours, "script", "initrd") == 2.0
    assert phase(ours, "dhcp", "tftp") is None
    rows = {ln[:30].strip(): ln[30:].split() for ln in phase_table([ours, ref]).splitlines()[2:]}
    assert rows["power-on -> firmware lease"] == ["5.00", "5.50", "-0.50"]
    assert rows["script -> initrd sent"] == ["2.00", "3.00", "-1.00"]
    assert rows["stage 1 -> booted"] == ["1.00", "1.50", "-0.50"]
