"""The declarative configuration: a JSON file, validated against one schema.

The schema below is the single source of truth for every key: its type, its
default and its documentation. `docs/configuration.md` is checked against it
by the test suite, and the NixOS module's options mirror it.

A bad file produces one `ConfigError` that names the key (dotted path) and
what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.config.macs import normalize_mac
from appliance.errors import ConfigError
from netservices.listen import parse_listen

DEFAULT_CONFIG_PATH = "/etc/nixie/config.json"


# --------------------------------------------------------------------------
# value checkers: each takes (key, value) and returns the normalised value or
# raises ConfigError(key, problem)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_str(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(key, f"expected a non-empty string, got {json.dumps(v)}")
    return v


def check_opt_str(key: str, v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ConfigError(key, f"expected a string or null, got {json.dumps(v)}")
    return v


def check_bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(key, f"expected true or false, got {json.dumps(v)}")
    return v


def int_range(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(key: str, v: Any) -> int:
        if not _is_int(v):
            raise ConfigError(key, f"expected an integer, got {json.dumps(v)}")
        if not lo <= v <= hi:
            raise ConfigError(key, f"{v} is outside {lo}..{hi}")
        return v

    return check


def one_of(*choices: str) -> Callable[[str, Any], str]:
    def check(key: str, v: Any) -> str:
        if v not in choices:
            raise ConfigError(key, f"expected one of {', '.join(choices)}, got {json.dumps(v)}")
        return v

    return check


def check_str_list(key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(key, f"expected a list of strings, got {json.dumps(v)}")
    return list(v)


def check_networks(key: str, v: Any) -> list[str]:
    """A list of IPv4 or IPv6 networks (CIDR), each normalised."""
    out = []
    for x in check_str_list(key, v):
        try:
            out.append(str(ipaddress.ip_network(x, strict=False)))
        except ValueError:
            raise ConfigError(key, f"{x!r} is not a network (CIDR)") from None
    return out


def check_ipv4(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(key, f"expected an IPv4 address string, got {json.dumps(v)}")
    try:
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        raise ConfigError(key, f"{v!r} is not an IPv4 address") from None


def check_cidr(key: str, v: Any) -> str:
    if not isinstance(v, str) or "/" not in v:
        raise ConfigError(key, f"expected an address with prefix like 10.0.0.1/24, got {json.dumps(v)}")
    try:
        iface = ipaddress.IPv4Interface(v)
    except ValueError:
        raise ConfigError(key, f"{v!r} is not an IPv4 address with prefix") from None
    if iface.ip == iface.network.network_address and iface.network.prefixlen < 31:
        raise ConfigError(key, f"{v!r} is the network address, not a host address")
    return str(iface)


def check_opt_cidr(key: str, v: Any) -> str | None:
    return None if v is None else check_cidr(key, v)


def check_listen(key: str, v: Any) -> str:
    """host:port with an IPv4 host (or [v6]); port 1..65535."""
    if not isinstance(v, str) or ":" not in v:
        raise ConfigError(key, f"expected HOST:PORT, got {json.dumps(v)}")
    host, _, port = v.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(key, f"{host!r} is not an IP address (in {v!r})") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, f"{port!r} is not a port number (in {v!r})")
    return v


def check_listen_list(key: str, v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise ConfigError(key, f"expected a list of HOST:PORT, got {json.dumps(v)}")
    return [check_listen(f"{key}[{i}]", x) for i, x in enumerate(v)]


def check_opt_listen(key: str, v: Any) -> str | None:
    return None if v is None else check_listen(key, v)


def check_opt_listen_list(key: str, v: Any) -> list[str] | None:
    return None if v is None else check_listen_list(key, v)


# Listeners whose default (null) is the LAN address on this port, never every address:
# outside NixOS nothing else (no firewall) keeps the WAN side away from them.
LAN_LISTEN_PORTS = {"tftp.listen": 69, "boot.http_listen": 8081, "web.listen": 8080,
                    "dns.listen": 53}


def check_upstreams(key: str, v: Any) -> list[str]:
    """DNS upstreams: IP or IP:port strings."""
    if not isinstance(v, list):
        raise ConfigError(key, f"expected a list of addresses, got {json.dumps(v)}")
    out = []
    for i, x in enumerate(v):
        k = f"{key}[{i}]"
        if not isinstance(x, str):
            raise ConfigError(k, f"expected an address string, got {json.dumps(x)}")
        host, port = x, "53"
        if x.count(":") == 1:
            host, port = x.split(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ConfigError(k, f"{x!r} is not an IP address") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(k, f"{port!r} is not a port number")
        out.append(x)
    return out


def check_range(key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or len(v) != 2:
        raise ConfigError(key, f"expected [first, last] addresses, got {json.dumps(v)}")
    first = ipaddress.IPv4Address(check_ipv4(f"{key}[0]", v[0]))
    last = ipaddress.IPv4Address(check_ipv4(f"{key}[1]", v[1]))
    if last < first:
        raise ConfigError(key, f"last address {last} is before first {first}")
    return [str(first), str(last)]


def check_cidr6(key: str, v: Any) -> str:
    """An IPv6 host address in a /64 (the prefix SLAAC needs), e.g. fd12:3456:789a:1::1/64."""
    if not isinstance(v, str) or "/" not in v:
        raise ConfigError(key, f"expected an IPv6 address with prefix like fd00:1::1/64, got {json.dumps(v)}")
    try:
        iface = ipaddress.IPv6Interface(v)
    except ValueError:
        raise ConfigError(key, f"{v!r} is not an IPv6 address with prefix") from None
    if iface.network.prefixlen != 64:
        raise ConfigError(key, f"{v!r}: the LAN prefix must be a /64 (SLAAC needs it)")
    if iface.ip == iface.network.network_address:
        raise ConfigError(key, f"{v!r} is the network address, not a host address")
    return str(iface)


def check_opt_cidr6(key: str, v: Any) -> str | None:
    return None if v is None else check_cidr6(key, v)


def check_ipv6(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(key, f"expected an IPv6 address string, got {json.dumps(v)}")
    try:
        return str(ipaddress.IPv6Address(v))
    except ValueError:
        raise ConfigError(key, f"{v!r} is not an IPv6 address") from None


def check_opt_range6(key: str, v: Any) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2:
        raise ConfigError(key, f"expected [first, last] IPv6 addresses or null, got {json.dumps(v)}")
    first = ipaddress.IPv6Address(check_ipv6(f"{key}[0]", v[0]))
    last = ipaddress.IPv6Address(check_ipv6(f"{key}[1]", v[1]))
    if last < first:
        raise ConfigError(key, f"last address {last} is before first {first}")
    return [str(first), str(last)]


def check_opt_ipv6_list(key: str, v: Any) -> list[str] | None:
    if v is None:
        return None
    return [check_ipv6(f"{key}[{i}]", x) for i, x in enumerate(check_str_list(key, v))]


def check_path(key: str, v: Any) -> str:
    s = check_str(key, v)
    if "\0" in s:
        raise ConfigError(key, "path contains a NUL byte")
    return s


def check_opt_path(key: str, v: Any) -> str | None:
    return None if v is None else check_path(key, v)


BOOT_URL_EXAMPLE = "http://10.0.0.1:8081"
_URL_UNSAFE = frozenset(" \t\r\n$;\"'`\\{}<>|&")


def url_problem(url: object, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why `url` is no base URL a boot script (iPXE, GRUB) can carry, or None: one of
    `schemes`, a host, no query, fragment, spaces or characters the scripts interpret,
    at most 200 characters."""
    text = url.strip() if isinstance(url, str) else ""
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in schemes or not host or parts.query \
            or parts.fragment or len(text) > 200 or any(c in _URL_UNSAFE for c in text):
        return f"must look like {BOOT_URL_EXAMPLE}" + (
            "" if "https" in schemes else " (http://: GRUB on boot media has no TLS)")
    return None


def check_opt_url(key: str, v: Any) -> str | None:
    """None, or an http(s) base URL (`url_problem`)."""
    if v is None:
        return None
    if (problem := url_problem(v)) is not None:
        raise ConfigError(key, f"{problem}, got {json.dumps(v)}")
    return v


def check_opt_media_url(key: str, v: Any) -> str | None:
    """None, or an http:// base URL boot media (GRUB) can reach."""
    if v is None:
        return None
    if (problem := url_problem(v, ("http",))) is not None:
        raise ConfigError(key, f"{problem}, got {json.dumps(v)}")
    return v


def check_mac_or_none(key: str, v: Any) -> str | None:
    if v is None:
        return None
    try:
        return normalize_mac(v)
    except Exception as e:  # InvalidInput
        raise ConfigError(key, str(e)) from None


# --------------------------------------------------------------------------
# the schema


@dataclass(frozen=True)
class Key:
    check: Callable[[str, Any], Any]
    default: Any
    doc: str
    required: bool = False


@dataclass(frozen=True)
class Section:
    keys: dict[str, Key | Section]
    doc: str = ""
    nullable: bool = False  # the whole section may be null (feature off)


SCHEMA = Section(
    {
        "state_dir": Key(check_path, "/var/lib/nixie", "Directory for run-time state: nixie.db, GC roots, caches, logs."),
        "locked": Key(lambda k, v: _check_locked(k, check_str_list(k, v)), [], "Dotted keys this file pins (the NixOS module lists the options it sets): the web UI, the API and the CLI show them read-only and cannot override them."),
        "log_level": Key(one_of("debug", "info", "warning", "error"), "info", "Minimum level of the structured log lines on stderr."),
        "lan": Section(
            {
                "interface": Key(check_str, "eth0", "The LAN interface the boot services answer on."),
                "address": Key(check_cidr, "10.0.0.1/24", "The router's LAN address with prefix; DHCP serves this network."),
                "domain": Key(check_str, "lan", "DNS domain of LAN hosts and leases."),
                "address6": Key(check_opt_cidr6, None, "The router's LAN IPv6 address in a /64; null means a ULA /64 generated at first start and kept (settings key lan.ula), the router taking ::1 in it. Router advertisements and DHCPv6 serve this prefix."),
            },
            "The network the router serves.",
        ),
        "wan": Section(
            {
                "interface": Key(check_opt_str, None, "The uplink interface; null when the router has no WAN role."),
                "address": Key(check_opt_cidr, None, "Static WAN address with prefix; null means DHCP client on the WAN."),
                "gateway": Key(lambda k, v: None if v is None else check_ipv4(k, v), None, "Default gateway for a static WAN."),
                "nat": Key(check_bool, True, "Masquerade LAN traffic leaving through the WAN."),
            },
            "The uplink.",
        ),
        "dhcp": Section(
            {
                "mode": Key(one_of("authoritative", "proxy", "off"), "authoritative", "authoritative: hand out addresses; proxy: only boot information next to another DHCP server; off."),
                "range": Key(check_range, ["10.0.0.100", "10.0.0.199"], "[first, last] of the dynamic pool (authoritative mode)."),
                "lease_seconds": Key(int_range(60, 365 * 86400), 3600, "Lease time handed to clients."),
                "router": Key(lambda k, v: None if v is None else check_ipv4(k, v), None, "Router option (3); null means the LAN address."),
                "dns_servers": Key(lambda k, v: None if v is None else [check_ipv4(f"{k}[{i}]", x) for i, x in enumerate(check_str_list(k, v))], None, "DNS servers option (6); null means the LAN address."),
                "conflict_check": Key(check_bool, False, "Ping an address before offering it."),
                "unknown_clients": Key(one_of("menu", "local", "ignore"), "menu", "What PXE clients with no host record get: the boot menu, boot from local disk, or no boot answer."),
                "lease_sync": Key(one_of("full", "normal"), "full", "How a lease is on disk before its ACK: full fsyncs every group commit (survives power loss); normal writes the WAL without fsync (survives a crash or kill -9, like Kea's memfile)."),
            },
            "DHCPv4 server.",
        ),
        "dhcp6": Section(
            {
                "mode": Key(one_of("stateful", "stateless", "off"), "off", "stateful: hand out addresses (IA_NA) and answer information requests; stateless: only DNS servers, domain and boot URLs (clients make their own addresses from the RA prefix); off. The RA's M and O flags follow it. Off by default: the RA's prefix (SLAAC) gives LAN hosts their addresses and its RDNSS the DNS server, and a client that sees neither M nor O in the RA (iPXE) boots without a DHCPv6 round."),
                "range": Key(check_opt_range6, None, "[first, last] IPv6 addresses of the dynamic pool (stateful mode); null means <prefix>::1:0 to <prefix>::1:ffff of lan.address6."),
                "preferred_seconds": Key(int_range(60, 365 * 86400), 3600, "Preferred lifetime of an address; clients renew at half of it."),
                "valid_seconds": Key(int_range(60, 365 * 86400), 7200, "Valid lifetime of an address (the lease time), at least the preferred lifetime."),
                "rapid_commit": Key(check_bool, True, "Answer a SOLICIT that asks for rapid commit with the binding REPLY at once (two messages instead of four)."),
                "dns_servers": Key(check_opt_ipv6_list, None, "DNS servers option (23), also in the RA's RDNSS; null means the router's IPv6 address."),
            },
            "DHCPv6 server (RFC 8415); unknown PXE clients follow dhcp.unknown_clients.",
        ),
        "ra": Section(
            {
                "enable": Key(check_bool, True, "Send IPv6 router advertisements on the LAN: the lan.address6 prefix (SLAAC), the router as DNS server (RDNSS) and lan.domain (DNSSL); solicitations are answered at once. On by default: iPXE configures IPv4 and IPv6 at once, and without an answer to its router solicitations every boot waits about 12 s for them to time out."),
                "interval_seconds": Key(int_range(4, 1800), 600, "Longest time between unsolicited advertisements (MaxRtrAdvInterval); each waits a random time between a third of it and it."),
                "router_lifetime_seconds": Key(int_range(0, 9000), 1800, "How long clients use the router as their default IPv6 router; 0 advertises the prefix and DNS without being a default router."),
                "prefix_valid_seconds": Key(int_range(0, 0xFFFFFFFF), 86400, "Valid lifetime of the advertised prefix."),
                "prefix_preferred_seconds": Key(int_range(0, 0xFFFFFFFF), 14400, "Preferred lifetime of the advertised prefix."),
                "mtu": Key(int_range(0, 65535), 0, "MTU option of the advertisements; 0 leaves it out."),
            },
            "IPv6 router advertisements (RFC 4861, RDNSS/DNSSL of RFC 8106).",
        ),
        "tftp": Section(
            {
                "listen": Key(check_opt_listen_list, None, "Addresses the TFTP server binds (IPv4 or [IPv6]:port); null means the LAN address, port 69, and the LAN IPv6 address when IPv6 runs on the LAN (ra.enable or dhcp6.mode)."),
                "root": Key(check_opt_path, None, "Directory served read-only; null means state_dir/tftp (populated with the iPXE binaries)."),
                "ipxe_dir": Key(check_path, "/usr/lib/ipxe", "Where the iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi) come from."),
                "workers": Key(int_range(0, 64), 0, "Worker processes serving TFTP (all waiting on the listen sockets); 0 means one per two CPUs."),
                "busy_poll_us": Key(int_range(0, 10000), 100, "Microseconds a TFTP worker polls without sleeping, while transfers are active, before it sleeps (as Linux's net.core.busy_poll): a lock-step client's next ACK usually comes within it, which saves a wake-up per block; 0 turns it off."),
            },
            "TFTP server for the iPXE binaries.",
        ),
        "boot": Section(
            {
                "http_listen": Key(check_opt_listen, None, "HTTP boot listener: iPXE scripts, kernels, initrds, the binary cache, the agent API (IPv4 or [IPv6]:port); null means the LAN address, port 8081, and the LAN IPv6 address when IPv6 runs on the LAN (ra.enable or dhcp6.mode)."),
                "public_url": Key(check_opt_url, None, "Base URL clients use to reach http_listen; null derives it from lan.address."),
                "menu": Key(check_bool, True, "Show a menu of the host's generations, newest first; the default entry is the current generation (the newest, unless the admin rolled back), marked \"(current)\"."),
                "menu_timeout_seconds": Key(int_range(0, 3600), 5, "Seconds before the menu's default entry boots; 0 boots the current generation without a menu."),
                "cmdline": Key(check_opt_str, None, "Extra kernel parameters for every netbooted host."),
                "token_seconds": Key(int_range(60, 30 * 86400), 3600, "How long a per-boot agent token stays valid unused after its boot script is fetched, and after each `installing` report of an install."),
                "token_used_seconds": Key(int_range(10, 86400), 120, "How long a per-boot agent token stays valid after the report that ends its boot (booted, installed or failed): time for the agent's retries only."),
                "remote": Key(check_bool, False, "Open the HTTP boot port on the WAN and VPN interfaces too (the firewall), for machines beyond the LAN that boot from downloaded media; they must present a media token there. false: only the LAN reaches it."),
                "media_url": Key(check_opt_media_url, None, "Base URL baked into boot media for machines beyond the LAN (a WAN-side or port-forwarded address of the HTTP boot listener); null offers only the LAN and VPN addresses."),
                "trusted_networks": Key(check_networks, [], "Networks besides the LAN whose clients may fetch boot scripts without a media token (segments behind a DHCP relay); everywhere else a script needs a media token."),
            },
            "HTTP boot.",
        ),
        "web": Section(
            {
                "listen": Key(check_opt_listen_list, None, "Admin web UI and REST API listeners (IPv4 or [IPv6]:port); null means the LAN address, port 8080, and the LAN IPv6 address when IPv6 runs on the LAN (ra.enable or dhcp6.mode)."),
                "secret_key_file": Key(check_opt_path, None, "File holding the session signing key; null creates state_dir/secret_key."),
                "workers": Key(int_range(0, 64), 0, "Web server processes sharing the listeners; 0 means one per CPU (at most 4), 1 serves inside nixie serve."),
                "tls": Key(check_bool, True, "Serve the admin UI and API over HTTPS (plain HTTP on the same port is redirected to it); false serves plain HTTP."),
                "tls_cert_file": Key(check_opt_path, None, "PEM certificate (chain) the admin UI serves; null uses state_dir/tls/cert.pem, made self-signed at first start (nixie admin cert install replaces it)."),
                "tls_key_file": Key(check_opt_path, None, "PEM private key of tls_cert_file (set both or neither)."),
                "hsts_seconds": Key(int_range(0, 2 * 365 * 86400), 31536000, "max-age of the Strict-Transport-Security header on HTTPS answers; 0 sends none."),
                "max_body_bytes": Key(int_range(1024, 64 * 1024 * 1024), 1024 * 1024, "Largest request body the admin server reads (forms, API calls); a larger one is refused with 413 before it is read."),
                "max_import_bytes": Key(int_range(1024, 256 * 1024 * 1024), 9 * 1024 * 1024, "Largest request body for a hosts.json import (the Hosts page's upload and POST /api/v1/hosts-json)."),
                "max_restore_bytes": Key(int_range(1 << 20, 1 << 36), 1 << 30, "Largest backup archive the Backup page and POST /api/v1/backup/restore take (the upload is refused with 413 before it is read)."),
                "idle_timeout_seconds": Key(int_range(1, 3600), 30, "Seconds a connection with no request in flight is kept open."),
                "request_timeout_seconds": Key(int_range(1, 3600), 30, "Seconds a request (TLS handshake, headers and body) may take to arrive after its first byte; a slower one is cut off."),
                "max_connections": Key(int_range(16, 4096), 256, "Open connections per web server process; a new one beyond it closes the idlest idle one."),
                "max_connections_per_client": Key(int_range(1, 4096), 64, "Open connections per client (an IPv4 address, or an IPv6 /64) and web server process; beyond it the client's own idlest connection is closed (or the new one refused)."),
            },
            "Admin web UI.",
        ),
        "dns": Section(
            {
                "listen": Key(check_opt_listen_list, None, "Addresses the DNS server binds (UDP and TCP); null means the LAN address, port 53, and with IPv6 on the LAN (ra.enable or dhcp6.mode) the router's LAN IPv6 address (lan.address6 or the ULA) too."),
                "upstream": Key(check_upstreams, [], "Resolvers for names outside lan.domain; empty means no forwarding."),
                "enable": Key(check_bool, True, "Run the DNS server."),
            },
            "LAN DNS.",
        ),
        "vpn": Section(
            {
                "enable": Key(check_bool, False, "Run the WireGuard server for remote administration."),
                "interface": Key(check_str, "wg-nixie", "Name of the WireGuard interface (unique on the machine)."),
                "listen_port": Key(int_range(1, 65535), 51820, "UDP port WireGuard listens on."),
                "address": Key(check_cidr, "10.99.0.1/24", "The router's tunnel address with prefix; peers get addresses in this network."),
                "endpoint": Key(check_opt_str, None, "HOST:PORT peers dial (the router's public address); null derives it from wan.address."),
            },
            "WireGuard remote access.",
        ),
        "network": Section(
            {
                "manage": Key(check_bool, False, "Set up the interfaces (LAN bridge and address, WAN static or DHCP client, routes) from this file and the confirmed UI changes when serve starts."),
                "confirm_seconds": Key(int_range(5, 3600), 60, "How long a network change waits for confirmation before it rolls back by itself."),
            },
            "Interfaces managed by the appliance.",
        ),
        "firewall": Section(
            {
                "enable": Key(check_bool, False, "Apply the generated nftables ruleset when serve starts and with every network change (the NixOS router module turns it on)."),
                "ssh_port": Key(int_range(1, 65535), 22, "SSH port the firewall opens to the LAN and the VPN."),
            },
            "nftables firewall and NAT.",
        ),
        "builder": Section(
            {
                "kind": Key(one_of("local", "remote"), "local", "local: this router builds; remote: an SSH Nix builder."),
                "uri": Key(check_opt_str, None, "Remote store URI, e.g. ssh-ng://nix@builder (kind remote)."),
                "ssh_key": Key(check_opt_path, None, "SSH private key for the remote builder."),
                "host_key": Key(check_opt_str, None, "The remote builder's SSH host public key (e.g. \"ssh-ed25519 AAAA...\"); null uses the system's known_hosts."),
                "systems": Key(check_str_list, ["x86_64-linux"], "Systems the builder builds."),
                "max_jobs": Key(int_range(1, 256), 1, "Builds run at once."),
                "substituters": Key(check_str_list, [], "Extra binary caches."),
                "trusted_public_keys": Key(check_str_list, [], "Keys of the extra binary caches."),
                "keep_generations": Key(int_range(1, 1000), 10, "Generations kept per host (rows and GC roots); older ones are dropped."),
                "flake_refresh_seconds": Key(int_range(0, 7 * 86400), 900, "How often the build worker evaluates every flake again; 0 never."),
                "flake_policy": Key(one_of("on_change", "manual"), "on_change", "What a newly added flake does by itself (each flake can be switched): on_change binds the hosts its configurations declare (nixie.netboot.macs) and builds every bound host whose system changed; manual: neither, the admin binds and builds."),
                "flake_check_seconds": Key(int_range(0, 86400), 60, "How often the build worker checks each on_change flake's locked revision (nix flake metadata) and evaluates it again when it moved; 0 never (webhooks still do)."),
            },
            "Where host systems are built.",
        ),
        "netboot": Section(
            {
                "cache_max_bytes": Key(int_range(1 << 20, 1 << 50), 20 << 30, "Size limit of state_dir/cpio-cache (per-store-path archives); least recently used go first."),
                "zstd_level": Key(int_range(1, 19), 1, "zstd level of the per-store-path archives (1 is several times faster than 3 for nearly the same size)."),
                "workers": Key(int_range(0, 256), 0, "Threads compressing archives; 0 means one per CPU."),
                "wait_seconds": Key(int_range(0, 3600), 20, "How long an initrd request waits for missing archives before answering 'retry later'."),
                "hydra_urls": Key(check_str_list, [], "Hydra instances the `hydra` boot dispatch may ask (base URLs); empty disables it."),
            },
            "Netboot images (per-store-path CPIO cache).",
        ),
        "nix": Section(
            {
                "bin_dir": Key(check_opt_path, None, "Directory holding nix, nix-store, nix-build; null uses PATH."),
                "store": Key(check_opt_str, None, "Nix store URI to use instead of the default (tests use a chroot store)."),
                "extra_config": Key(lambda k, v: v if isinstance(v, str) else check_str(k, v), "", "Text appended to NIX_CONFIG for every nix call."),
                "cache_key_file": Key(check_opt_path, None, "The Nix secret key file the binary cache at /nix-cache signs with (the NixOS module sets the key its Nix daemon signs builds with); null makes one in state_dir/binary-cache."),
            },
            "How the appliance calls Nix.",
        ),
        "retention": Section(
            {
                "event_days": Key(int_range(1, 3_650), 90, "Events older than this many days are deleted (checked every few minutes)."),
                "event_rows": Key(int_range(1_000, 100_000_000), 200_000, "At most this many events are kept; the oldest go first."),
                "anonymous_events_per_minute": Key(int_range(1, 100_000), 30, "Events one client (address, or MAC for DHCP) may cause per kind and minute without logging in: boot scripts and transfers, DHCP, rejected agent reports, failed logins. Over it they are counted and summarised in one events.suppressed event; one kind from all clients together gets 20 times this."),
            },
            "How much of the event log is kept, and what anonymous traffic may write to it.",
        ),
        "gc": Section(
            {
                "interval_seconds": Key(int_range(0, 30 * 86400), 86400, "How often nixie serve deletes the Nix store paths of generations the router dropped (beyond builder.keep_generations, or with their host) that nothing else keeps; 0 never (nixie gc, the Backup page and POST /api/v1/gc still do)."),
                "disk_warn_percent": Key(int_range(1, 100), 90, "Disk use (of the filesystems holding state_dir and the Nix store) from which nixie status, /healthz and the dashboard warn."),
            },
            "Nix store garbage collection and disk use.",
        ),
        "bmc": Section(
            {
                "poll_seconds": Key(int_range(0, 86400), 60, "How often nixie serve asks every host's BMC for its power state (shown on the host list and dashboard); 0 never."),
            },
            "Power control through hosts' BMCs (IPMI, Redfish).",
        ),
        "metrics": Section(
            {
                "enable": Key(check_bool, True, "Serve Prometheus metrics at /metrics on the admin web listener."),
                "token_file": Key(check_opt_path, None, "File holding the bearer token a scraper must send (Authorization: Bearer ...); null asks for none."),
                "allow": Key(check_networks, [], "Networks allowed to scrape /metrics besides loopback, the LAN and the VPN network; anyone else gets 403."),
            },
            "Prometheus metrics.",
        ),
    }
)

def _check_locked(key: str, keys: list[str]) -> list[str]:
    known = {k for k, _ in iter_keys()}
    for i, k in enumerate(keys):
        if k not in known:
            raise ConfigError(f"{key}[{i}]", f"{k!r} is not a configuration key")
    return keys


# Section aliases: `builder: "local"` is accepted as `builder: {"kind": "local"}`.
_SHORTHANDS = {"builder": "kind"}


class ConfigNode:
    """Read-only attribute access over a validated config section."""

    def __init__(self, values: dict[str, Any]):
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("config is read-only")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, ConfigNode) else v for k, v in self._values.items()}

    def __repr__(self) -> str:
        return f"ConfigNode({self.to_dict()!r})"


def _validate(section: Section, data: Any, prefix: str) -> ConfigNode:
    if not isinstance(data, dict):
        raise ConfigError(prefix or "(top level)", f"expected an object, got {json.dumps(data)[:60]}")
    unknown = sorted(set(data) - set(section.keys))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(key, f"unknown key (known here: {', '.join(sorted(section.keys))})")
    out: dict[str, Any] = {}
    for name, spec in section.keys.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, Section):
            value = data.get(name, {})
            if name in _SHORTHANDS and isinstance(value, str):
                value = {_SHORTHANDS[name]: value}
            if value is None:
                value = {}
            out[name] = _validate(spec, value, key)
        elif name in data:
            out[name] = spec.check(key, data[name])
        elif spec.required:
            raise ConfigError(key, "is required")
        else:
            out[name] = spec.default
    return ConfigNode(out)


@dataclass(frozen=True)
class Config:
    """A validated configuration. Sections are attributes: `cfg.lan.address`."""

    root: ConfigNode
    path: str | None = None
    _derived: dict[str, Any] = field(default_factory=dict, compare=False)  # keys filled, not given

    def __getattr__(self, name: str) -> Any:
        return getattr(self.root, name)

    # derived values ------------------------------------------------------
    @property
    def ipv6_lan(self) -> bool:
        """Does the router serve IPv6 on the LAN (router advertisements or DHCPv6)? Never
        on a loopback LAN interface: it has no link to advertise on."""
        return (self.root.ra.enable or self.root.dhcp6.mode != "off") and self.root.lan.interface != "lo"

    @property
    def lan_interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.root.lan.address)

    @property
    def lan_ip(self) -> str:
        return str(self.lan_interface.ip)

    def listen_is_default(self, key: str) -> bool:
        """`key` (one of LAN_LISTEN_PORTS) was left null: it listens where the LAN is."""
        return key in self._derived

    @property
    def db_path(self) -> Path:
        return Path(self.root.state_dir) / "nixie.db"

    @property
    def tftp_root(self) -> Path:
        return Path(self.root.tftp.root or Path(self.root.state_dir) / "tftp")

    @property
    def boot_base_url(self) -> str:
        """The URL booting clients use for the HTTP boot listener."""
        if self.root.boot.public_url:
            return self.root.boot.public_url.rstrip("/")
        _, host, port = parse_listen(self.root.boot.http_listen)
        if host in ("0.0.0.0", "::"):
            host = self.lan_ip
        return f"http://{host}:{port}"

    def to_dict(self) -> dict[str, Any]:
        return self.root.to_dict()


def _cross_checks(cfg: Config) -> None:
    net = cfg.lan_interface.network
    if cfg.dhcp.mode == "authoritative":
        first, last = (ipaddress.IPv4Address(a) for a in cfg.dhcp.range)
        for i, a in enumerate((first, last)):
            if a not in net:
                raise ConfigError(f"dhcp.range[{i}]", f"{a} is outside the LAN network {net}")
        if first <= cfg.lan_interface.ip <= last:
            raise ConfigError("dhcp.range", f"the range includes the router's own address {cfg.lan_ip}")
    if bool(cfg.web.tls_cert_file) != bool(cfg.web.tls_key_file):
        raise ConfigError("web.tls_key_file", "set web.tls_cert_file and web.tls_key_file together")
    if cfg.dhcp6.range is not None and cfg.lan.address6 is not None:
        net6 = ipaddress.IPv6Interface(cfg.lan.address6).network
        for i, a in enumerate(cfg.dhcp6.range):
            if ipaddress.IPv6Address(a) not in net6:
                raise ConfigError(f"dhcp6.range[{i}]", f"{a} is outside the LAN prefix {net6}")
    if cfg.dhcp6.valid_seconds < cfg.dhcp6.preferred_seconds:
        raise ConfigError("dhcp6.valid_seconds", "is shorter than dhcp6.preferred_seconds")
    if cfg.builder.kind == "remote" and not cfg.builder.uri:
        raise ConfigError("builder.uri", "is required when builder.kind is remote")


def parse_config(data: Any, path: str | None = None) -> Config:
    root = _validate(SCHEMA, data, "")
    cfg = Config(root, path, _listen_on_lan(root))
    _cross_checks(cfg)
    return cfg


def _listen_on_lan(root: ConfigNode) -> dict[str, Any]:
    """Fill each listener left null with the LAN address (LAN_LISTEN_PORTS); returns
    {dotted key: value} of those it filled (`Config._derived`: resolving overrides
    derives them again from the resolved lan.address)."""
    ip = ipaddress.IPv4Interface(root.lan.address).ip
    derived: dict[str, Any] = {}
    for key, port in LAN_LISTEN_PORTS.items():
        section, leaf = key.split(".")
        values = root[section]._values
        if values[leaf] is None:
            values[leaf] = f"{ip}:{port}" if key == "boot.http_listen" else [f"{ip}:{port}"]
            derived[key] = values[leaf]
    return derived


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file. Raises ConfigError."""
    p = Path(path or os.environ.get("NIXIE_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError("", f"file {p} does not exist") from None
    except OSError as e:
        raise ConfigError("", f"cannot read {p}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("", f"{p} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return parse_config(data, str(p))


def iter_keys(section: Section = SCHEMA, prefix: str = ""):
    """Yield (dotted key, Key) for every leaf of the schema."""
    for name, spec in section.keys.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, Section):
            yield from iter_keys(spec, key)
        else:
            yield key, spec


def defaults() -> dict[str, Any]:
    """Every key's default, as a config file would hold it (a listener left to the
    LAN address is null here; `parse_config({})` fills it in)."""
    cfg = parse_config({})
    data = cfg.to_dict()
    for key in cfg._derived:
        section, leaf = key.split(".")
        data[section][leaf] = None
    return data


def example_config(state_dir: str = "/var/lib/nixie", interface: str = "br-lan",
                   address: str = "10.77.0.1/24") -> dict[str, Any]:
    """A config that works in the lab (`nixie config example`)."""
    net = ipaddress.IPv4Interface(address).network
    first, last = net.network_address + 100, net.network_address + 200
    ip = str(ipaddress.IPv4Interface(address).ip)
    return {
        "state_dir": state_dir,
        "lan": {"interface": interface, "address": address, "domain": "lab.nixie"},
        "dhcp": {
            "mode": "authoritative",
            "range": [str(first), str(last)],
            "lease_seconds": 3600,
        },
        "tftp": {"listen": [f"{ip}:69"]},
        "boot": {"http_listen": f"{ip}:8081"},
        "web": {"listen": [f"{ip}:8080"]},
        "dns": {"listen": [f"{ip}:53"], "upstream": []},
        "builder": {"kind": "local"},
    }
