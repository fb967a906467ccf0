"""What to advertise and when, without sockets (RFC 4861 6.2).

`Advertiser` holds the encoded advertisement and the schedule: unsolicited
multicast RAs at a random interval in [min, max] (the first
MAX_INITIAL_RTR_ADVERTISEMENTS at most MAX_INITIAL_RTR_ADVERT_INTERVAL apart),
and answers to router solicitations: unicast at once to a solicitor that has an
address (RFC 7772 allows it; a booting client does not wait), or a multicast RA
within MAX_RA_DELAY_TIME for one from the unspecified address, never sooner than
MIN_DELAY_BETWEEN_RAS after the last multicast one.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from .codec import MalformedPacket, PrefixInfo, RouterAdvert, encode_ra, parse_rs

ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MAX_FINAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0
MAX_RA_DELAY_TIME = 0.5


@dataclass(frozen=True)
class RaSettings:
    interface: str
    prefix: str  # the LAN prefix advertised for SLAAC and on-link
    managed: bool = False  # M flag: DHCPv6 stateful
    other: bool = False  # O flag: DHCPv6 for other configuration
    router_lifetime: int = 1800
    max_interval: float = 600.0
    min_interval: float | None = None  # None: 0.33 * max (RFC 4861 default)
    valid_seconds: int = 86400
    preferred_seconds: int = 14400
    rdnss: tuple[str, ...] = ()
    dnssl: tuple[str, ...] = ()
    mtu: int | None = None
    source_mac: bytes | None = None

    @property
    def min_seconds(self) -> float:
        mi = self.min_interval if self.min_interval is not None else 0.33 * self.max_interval
        return max(min(mi, 0.75 * self.max_interval), 0.05)

    def advert(self) -> RouterAdvert:
        dns_life = max(int(self.max_interval * 3), 1)  # RFC 8106 5.1: at least 3 x max
        return RouterAdvert(
            router_lifetime=self.router_lifetime, managed=self.managed, other=self.other,
            source_mac=self.source_mac, mtu=self.mtu,
            prefixes=[PrefixInfo(self.prefix, self.valid_seconds, self.preferred_seconds)],
            rdnss=list(self.rdnss), rdnss_lifetime=dns_life if self.rdnss else 0,
            dnssl=list(self.dnssl), dnssl_lifetime=dns_life if self.dnssl else 0)


def needs_restart(old: RaSettings, new: RaSettings) -> bool:
    return old.interface != new.interface


class Advertiser:
    def __init__(self, settings: RaSettings, *, rng: random.Random | None = None, now: float = 0.0):
        self.rng = rng or random.Random()
        self.counters: dict[str, Counter[str]] = {"received": Counter(), "sent": Counter(),
                                                  "dropped": Counter()}
        self.initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS
        self.last_multicast = float("-inf")
        self.next_at = now  # the first one goes out at start
        self.set_settings(settings)

    def set_settings(self, s: RaSettings) -> None:
        self.settings = s
        self.payload = encode_ra(s.advert())
        self.goodbye = encode_ra(replace(s.advert(), router_lifetime=0))

    def reconfigure(self, s: RaSettings, now: float) -> None:
        """New content: advertised soon (like a fresh start: a few quick RAs)."""
        self.set_settings(s)
        self.initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS
        self.next_at = min(self.next_at, max(now, self.last_multicast + MIN_DELAY_BETWEEN_RAS))

    def _interval(self) -> float:
        s = self.settings
        iv = self.rng.uniform(s.min_seconds, s.max_interval)
        if self.initial_left > 0:
            self.initial_left -= 1
            iv = min(iv, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        return iv

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def sent_multicast(self, now: float) -> None:
        self.counters["sent"]["ra_multicast"] += 1
        self.last_multicast = now
        self.next_at = now + self._interval()

    def on_solicit(self, data: bytes, src: str, hop_limit: int | None, now: float) -> str | None:
        """A datagram from the raw socket. Returns the unicast destination to send the
        RA to now, or None (dropped, or answered by the next multicast RA)."""
        if hop_limit is not None and hop_limit != 255:
            self.counters["dropped"]["hop_limit"] += 1
            return None
        try:
            rs = parse_rs(data)
        except MalformedPacket:
            self.counters["dropped"]["malformed"] += 1
            return None
        self.counters["received"]["rs"] += 1
        if src in ("::", "0:0:0:0:0:0:0:0"):
            if rs.source_mac is not None:  # RFC 4861 6.1.1: not allowed from ::
                self.counters["dropped"]["lladdr_from_unspecified"] += 1
                return None
            at = max(now + self.rng.uniform(0, MAX_RA_DELAY_TIME),
                     self.last_multicast + MIN_DELAY_BETWEEN_RAS)
            self.next_at = min(self.next_at, at)
            return None
        self.counters["sent"]["ra_unicast"] += 1
        return src

    def stats(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in self.counters.items()}
