"""DHCPv6 server (RFC 8415): stateful (IA_NA) or stateless (information requests),
relayed messages, rapid commit, boot URLs. See docs/architecture.md, section IPv6."""
