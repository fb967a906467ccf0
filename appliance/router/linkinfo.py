"""The router's network interfaces and their state, read-only, from the kernel (pyroute2)."""

from __future__ import annotations

from typing import Any


def list_interfaces() -> list[dict[str, Any]]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        addrs: dict[int, list[str]] = {}
        for a in ipr.get_addr():
            addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        out = []
        for link in ipr.get_links():
            stats = link.get_attr("IFLA_STATS64") or {}
            out.append({
                "index": link["index"],
                "name": link.get_attr("IFLA_IFNAME"),
                "mac": link.get_attr("IFLA_ADDRESS"),
                "mtu": link.get_attr("IFLA_MTU"),
                "state": (link.get_attr("IFLA_OPERSTATE") or "UNKNOWN").lower(),
                "up": bool(link["flags"] & 1),
                "kind": (link.get_attr("IFLA_LINKINFO") or {}).get_attr("IFLA_INFO_KIND")
                if link.get_attr("IFLA_LINKINFO") else None,
                "addresses": addrs.get(link["index"], []),
                "rx_bytes": stats.get("rx_bytes", 0) if isinstance(stats, dict) else 0,
                "tx_bytes": stats.get("tx_bytes", 0) if isinstance(stats, dict) else 0,
            })
    return sorted(out, key=lambda i: i["index"])
