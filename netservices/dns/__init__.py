"""LAN DNS: authoritative for the LAN domain (hosts and leases), a forwarding cache
for everything else, refused to clients outside the LAN. See `server.DnsService`."""

from __future__ import annotations

from collections.abc import Iterable

from ..backend import NameDirectory
from .resolver import Resolver
from .server import DnsService

__all__ = ["DnsService", "Resolver", "make_dns_service"]


def make_dns_service(*, listen: list[str], domain: str, network: str,
                     directory: NameDirectory | None, upstreams: Iterable[str] = (),
                     clients: Iterable[str] = (), refresh_seconds: float = 2.0,
                     ttl: int = 60, workers: int = 1) -> DnsService:
    """The DNS service. `network` is the LAN (CIDR): its clients may recurse and its
    reverse names are ours; `clients` adds more networks allowed to query (the VPN);
    `workers` UDP loops share each listen address through SO_REUSEPORT."""
    resolver = Resolver.create(domain, network, clients=clients, upstreams=upstreams)
    return DnsService(resolver, listen, directory, domain=domain, network=network,
                      refresh_seconds=refresh_seconds, ttl=ttl, workers=workers)
