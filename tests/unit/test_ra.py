"""Router advertisements: the codec, the schedule of RFC 4861 6.2.4, answers to
solicitations, and fuzzing."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netservices.ra import codec as rac
from netservices.ra.engine import (
    MAX_INITIAL_RTR_ADVERT_INTERVAL,
    MIN_DELAY_BETWEEN_RAS,
    Advertiser,
)
from tests.dhcp6_helpers import ra_seeds, ra_settings, run_ra


def test_advert_round_trip_with_prefix_rdnss_dnssl_mtu_and_lladdr():
    ra = rac.parse_ra(rac.encode_ra(ra_settings().advert()))
    assert ra.managed and ra.other and ra.router_lifetime == 1800 and ra.cur_hop_limit == 64
    assert ra.prefixes == [rac.PrefixInfo("fd00:77::/64", 86400, 14400, True, True)]
    assert ra.rdnss == ["fd00:77::1"] and ra.rdnss_lifetime == 1800
    assert ra.dnssl == ["lab.nixie"] and ra.dnssl_lifetime == 1800
    assert ra.mtu == 1500 and ra.source_mac == bytes.fromhex("02aabbccdd01")
    stateless = rac.parse_ra(rac.encode_ra(ra_settings(managed=False, other=True).advert()))
    assert not stateless.managed and stateless.other
    data = rac.encode_ra(ra_settings().advert())
    assert len(data) % 8 == 0


def test_wire_bytes_of_the_prefix_option():
    data = rac.encode_ra(rac.RouterAdvert(0, prefixes=[rac.PrefixInfo("fd00:1::/64", 10, 5)]))
    assert data[16:18] == b"\x03\x04" and data[18] == 64 and data[19] == 0xC0
    assert data[20:28] == b"\x00\x00\x00\x0a\x00\x00\x00\x05"
    assert data[32:48] == bytes.fromhex("fd000001000000000000000000000000")


def test_schedule_first_three_quick_then_within_min_max():
    adv = Advertiser(ra_settings(max_interval=600), rng=random.Random(1), now=0.0)
    assert adv.due(0.0)
    t, gaps = 0.0, []
    for _ in range(10):
        adv.sent_multicast(t)
        gaps.append(adv.next_at - t)
        t = adv.next_at
    assert all(g <= MAX_INITIAL_RTR_ADVERT_INTERVAL for g in gaps[:3])
    assert all(0.33 * 600 <= g <= 600 for g in gaps[3:])


def test_solicitation_with_an_address_is_answered_unicast_at_once():
    adv = Advertiser(ra_settings(), rng=random.Random(1), now=0.0)
    adv.sent_multicast(0.0)
    assert adv.on_solicit(ra_seeds()[1], "fe80::1", 255, 5.0) == "fe80::1"
    assert adv.counters["sent"]["ra_unicast"] == 1


def test_solicitation_from_unspecified_brings_the_next_multicast_forward():
    adv = Advertiser(ra_settings(), rng=random.Random(1), now=0.0)
    adv.sent_multicast(0.0)
    later = adv.next_at
    assert adv.on_solicit(ra_seeds()[0], "::", 255, 1.0) is None
    assert MIN_DELAY_BETWEEN_RAS <= adv.next_at < later  # rate-limited, but soon
    assert adv.on_solicit(ra_seeds()[1], "::", 255, 1.0) is None  # lladdr from :: is invalid
    assert adv.counters["dropped"]["lladdr_from_unspecified"] == 1


def test_hop_limit_other_than_255_and_bad_options_are_dropped():
    adv = Advertiser(ra_settings(), now=0.0)
    assert adv.on_solicit(ra_seeds()[0], "fe80::1", 64, 1.0) is None
    assert adv.counters["dropped"]["hop_limit"] == 1
    assert not run_ra(adv, bytes((133, 0, 0, 0, 0, 0, 0, 0, 1, 0)))  # option of length 0
    assert not run_ra(adv, ra_seeds()[2])  # an RA is not a solicitation
    assert adv.counters["dropped"]["malformed"] == 2


def test_goodbye_has_router_lifetime_zero():
    adv = Advertiser(ra_settings(), now=0.0)
    assert rac.parse_ra(adv.goodbye).router_lifetime == 0
    assert rac.parse_ra(adv.payload).router_lifetime == 1800


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_solicitations(data):
    run_ra(Advertiser(ra_settings(), now=0.0), data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ra_seeds()), st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)),
                                             max_size=6))
def test_fuzz_advert_parser_raises_only_malformed(seed, flips):
    b = bytearray(seed)
    for pos, val in flips:
        if pos < len(b):
            b[pos] = val
    for parse in (rac.parse_ra, rac.parse_rs):
        try:
            parse(bytes(b))
        except rac.MalformedPacket:
            pass
