"""The router's IPv6 address on the LAN: put `lan.address6` (or the generated ULA)
on the LAN interface before router advertisements and DHCPv6 start.

Added without duplicate address detection (the router owns the prefix) so it is
usable at once, and with `replace`, so a restart or a second service finds it
as it should be. IPv6 is turned on for the interface if a sysctl turned it off.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

log = logging.getLogger("nixie.address6")

IFA_F_NODAD = 0x02


def enable_ipv6(interface: str) -> None:
    p = Path(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6")
    try:
        if p.read_text().strip() == "1":
            p.write_text("0\n")
    except OSError:
        pass  # no such sysctl (no IPv6 in the kernel): adding the address says why


def ensure_address6(interface: str, address6: str) -> None:
    """`address6` (address/prefix) on `interface`; raises OSError when it cannot be."""
    from pyroute2 import IPRoute  # third-party and slow to import: only where it is used

    iface = ipaddress.IPv6Interface(address6)
    enable_ipv6(interface)
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=interface)
        if not idx:
            raise OSError(f"no interface {interface} for {address6}")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                for a in ipr.get_addr(family=10, index=idx[0])}
        if (str(iface.ip), iface.network.prefixlen) in have:
            return
        ipr.addr("replace", index=idx[0], address=str(iface.ip),
                 prefixlen=iface.network.prefixlen, flags=IFA_F_NODAD)
    log.info("lan ipv6 address", extra={"interface": interface, "address": address6})
