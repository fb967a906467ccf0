"""DHCPv4 server: authoritative (addresses + boot answers) or proxyDHCP (boot
answers only). See docs/architecture.md, section DHCP."""
