"""The DHCPv4 codec: real captures, RFC corner cases, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netservices.dhcp import codec
from netservices.dhcp.codec import MalformedPacket
from tests.dhcp_helpers import DATA, client_packet, pcap_udp_payloads


def captured(name: str) -> list[bytes]:
    return [p for _, _, p in pcap_udp_payloads(DATA / name)]


def test_dhclient_capture_parses_to_a_full_exchange():
    pkts = [codec.parse(b) for b in captured("dhclient.pcap")]
    types = [p.message_type for p in pkts]
    # DORA, then INIT-REBOOT (REQUEST with no server id) and its ACK
    assert types[:4] == [codec.DISCOVER, codec.OFFER, codec.REQUEST, codec.ACK]
    assert codec.REQUEST in types[4:] and types.count(codec.ACK) >= 2
    disc, offer, req, ack = pkts[:4]
    assert disc.op == codec.BOOTREQUEST and offer.op == codec.BOOTREPLY
    assert disc.hostname == "capclient"
    assert req.requested_ip == offer.yiaddr and req.server_id == codec.ip_bytes("10.9.0.1")
    assert ack.yiaddr == offer.yiaddr and codec.ip_str(ack.yiaddr).startswith("10.9.0.")
    assert disc.xid == offer.xid == req.xid
    assert codec.OPT_PARAM_LIST in disc.options
    reboot = pkts[4]
    assert reboot.message_type == codec.REQUEST and reboot.server_id is None
    assert reboot.requested_ip == ack.yiaddr


def test_udhcpc_capture_has_client_id_and_vendor_class():
    pkts = [codec.parse(b) for b in captured("udhcpc.pcap")]
    disc = pkts[0]
    assert disc.message_type == codec.DISCOVER
    assert disc.client_id == b"\x01" + disc.mac
    assert disc.vendor_class.startswith(b"udhcp ")
    assert disc.hostname == "capudhcpc"
    assert codec.parse(captured("udhcpc.pcap")[3]).message_type == codec.ACK


@pytest.mark.parametrize("name", ["dhclient.pcap", "udhcpc.pcap"])
def test_captures_round_trip(name):
    for raw in captured(name):
        p = codec.parse(raw)
        again = codec.parse(codec.build(p))
        assert again == p


def test_option_overload_reads_file_and_sname():
    file_opts = bytes([codec.OPT_HOSTNAME, 3]) + b"abc" + b"\xff"
    sname_opts = bytes([codec.OPT_DOMAIN, 2]) + b"lb" + b"\xff"
    base = codec.parse(client_packet(codec.DISCOVER, "52:54:00:00:00:01", opt52=b"\x03"))
    raw = bytearray(codec.build(base))
    raw[108 : 108 + len(file_opts)] = file_opts  # file field
    raw[44 : 44 + len(sname_opts)] = sname_opts  # sname field
    p = codec.parse(bytes(raw))
    assert p.hostname == "abc" and p.options[codec.OPT_DOMAIN] == b"lb"
    assert p.file == b"" and p.sname == b""


def test_long_options_are_split_and_concatenated():
    value = bytes(range(256)) * 2  # 512 bytes: needs three instances
    raw = client_packet(codec.DISCOVER, "52:54:00:00:00:02", opt43=value)
    assert raw.count(bytes([43, 255])) == 2
    assert codec.parse(raw).options[43] == value


def test_relay_agent_info_and_pxe_options():
    relay = bytes([1, 4]) + b"port" + bytes([2, 3]) + b"sw1"
    uuid = b"\x00" + bytes(range(16))
    raw = client_packet(codec.DISCOVER, "52:54:00:00:00:03", opt82=relay, opt93=b"\x00\x07",
                        opt94=b"\x01\x03\x10", opt97=uuid, opt60=b"PXEClient:Arch:00007:UNDI:003016",
                        opt77=b"\x04iPXE\x03foo")
    p = codec.parse(raw)
    assert p.relay_agent_info == {1: b"port", 2: b"sw1"}
    assert p.client_arch == 7 and p.uuid == bytes(range(16))
    assert p.user_classes == [b"iPXE", b"foo"]
    bare = codec.parse(client_packet(codec.DISCOVER, "52:54:00:00:00:03", opt77=b"iPXE"))
    assert bare.user_classes == [b"iPXE"]


@pytest.mark.parametrize("raw, why", [
    (b"", "too short"),
    (bytes(239), "too short"),
    (bytes(300), "magic"),
    (client_packet(1, "52:54:00:00:00:04")[:-60].rstrip(b"\0\xff") + b"\x0c\x20ab", "runs past"),
    (codec.encode_header(1, 1, 0, *[b"\0" * 4] * 4, b"\0" * 16) + b"\x35", "no length"),
    (codec.encode_header(1, 1, 0, *[b"\0" * 4] * 4, b"\0" * 16) + b"\x34\x01\x07\xff", "overload"),
    (codec.encode_header(7, 1, 0, *[b"\0" * 4] * 4, b"\0" * 16) + b"\xff", "op 7"),
    (codec.encode_header(1, 1, 0, *[b"\0" * 4] * 4, b"\0" * 16, hlen=17) + b"\xff", "over 16"),
])
def test_malformed_packets_raise_one_error_type(raw, why):
    with pytest.raises(MalformedPacket, match=why):
        codec.parse(raw)


def test_malformed_relay_suboptions():
    with pytest.raises(MalformedPacket):
        codec.parse_suboptions(b"\x01\x09abc")


# ------------------------------------------------------------------ fuzzing

REAL = captured("dhclient.pcap") + captured("udhcpc.pcap")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=700))
def test_fuzz_random_bytes(data):
    try:
        p = codec.parse(data)
    except MalformedPacket:
        return
    codec.parse(codec.build(p))  # anything accepted can be written back


@settings(max_examples=600)
@given(st.sampled_from(REAL), st.lists(st.tuples(st.integers(0, 699), st.integers(0, 255)),
                                       max_size=8), st.integers(0, 700))
def test_fuzz_mutated_captures(base, flips, cut):
    raw = bytearray(base)
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    raw = bytes(raw[:cut]) if cut < len(raw) else bytes(raw)
    try:
        p = codec.parse(raw)
    except MalformedPacket:
        return
    _ = (p.message_type, p.client_id, p.hostname, p.client_arch, p.user_classes, p.uuid,
         p.requested_ip, p.server_id, p.mac_str)
    try:
        p.relay_agent_info  # noqa: B018
    except MalformedPacket:
        pass


option_codes = st.integers(1, 254).filter(lambda c: c != codec.OPT_OVERLOAD)


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1), st.binary(min_size=6, max_size=6),
       st.dictionaries(option_codes, st.binary(min_size=1, max_size=600), max_size=12),
       st.binary(max_size=63).map(lambda b: b.rstrip(b"\0")),
       st.binary(max_size=127).map(lambda b: b.rstrip(b"\0")))
def test_fuzz_build_parse_round_trip(xid, mac, options, sname, file):
    p = codec.Packet(xid=xid, chaddr=mac + bytes(10), sname=sname, file=file, options=options)
    assert codec.parse(codec.build(p)) == p


@pytest.mark.parametrize("name", ["ovmf-then-ipxe.pcap", "ipxe-bios-proxy.pcap"])
def test_firmware_captures_parse_and_round_trip(name):
    pkts = [(d, p) for _, d, p in pcap_udp_payloads(DATA / name) if d in (67, 68)]
    assert len(pkts) >= 4
    for _, raw in pkts:
        p = codec.parse(raw)
        assert codec.parse(codec.build(p)) == p
        assert p.message_type in (codec.DISCOVER, codec.OFFER, codec.REQUEST, codec.ACK)
