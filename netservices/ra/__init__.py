"""IPv6 router advertisements on the LAN (RFC 4861, RDNSS/DNSSL of RFC 8106): a
pure codec, a sans-IO advertiser (what to send when) and a thin loop over a raw
ICMPv6 socket. See docs/architecture.md, section IPv6."""
