"""LAN DNS: authoritative for the LAN domain (hosts and leases), a forwarding cache
for everything else, refused to clients outside the LAN. See `server.DnsService`."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

from ..backend import NameDirectory
from .resolver import Resolver
from .server import DnsService

__all__ = ["DnsService", "Resolver", "make_dns_service"]


def make_dns_service(*, listen: list[str], domain: str, network: str,
                     directory: NameDirectory | None, upstreams: Iterable[str] = (),
                     clients: Iterable[str] = (), refresh_seconds: float = 2.0,
                     ttl: int = 60, workers: int = 1, router_ip: str | None = None,
                     router_names: Iterable[str] | None = None, network6: str | None = None,
                     router_ip6: str | None = None,
                     prepare: Callable[[], None] | None = None) -> DnsService:
    """The DNS service. `network` is the LAN (CIDR): its clients may recurse and its
    reverse names are ours; `clients` adds more networks allowed to query (the VPN);
    `workers` UDP loops share each listen address through SO_REUSEPORT. With
    `router_ip`, the router's own names (`router_names`, by default this machine's
    host name) answer with it, and no DHCP client can take them. `network6` (the LAN's
    IPv6 prefix) may query too and its ip6.arpa names are ours; `router_ip6` gives the
    router's names an AAAA. `prepare` runs before every bind (e.g. puts the LAN's IPv6
    address in place)."""
    resolver = Resolver.create(domain, network, clients=clients, upstreams=upstreams,
                               network6=network6)
    names = tuple(router_names) if router_names is not None else (socket.gethostname(),)
    return DnsService(resolver, listen, directory, domain=domain, network=network,
                      refresh_seconds=refresh_seconds, ttl=ttl, workers=workers,
                      router_ip=router_ip, router_names=names if router_ip or router_ip6 else (),
                      network6=network6, router_ip6=router_ip6, prepare=prepare)
