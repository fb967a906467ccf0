"""Router networking: interface transactions (`network`), the nftables ruleset
(`firewall`), WireGuard (`vpn`), neighbour discovery, Wake-on-LAN, link info.
Never imports `appliance.nix`."""
