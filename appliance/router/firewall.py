"""The router's nftables ruleset: generated from config as text, applied atomically.

`FirewallSpec.from_config` reduces the config to the facts the ruleset needs;
`render` is a plain function from that spec to `nft -f` text (one table,
`inet nixie`, replaced as a whole in one transaction); `apply` feeds it to
`nft -f -` after a dry run (`nft -c`). The UI shows `render`'s text.

Policy: input and forward drop by default. Established/related traffic is
accepted; the admin UI and SSH only from the LAN and the VPN; the boot services
(DHCP 67/4011, TFTP 69, HTTP boot) only from the LAN; DNS from the LAN and the
VPN; WireGuard's port and DHCP-client replies on the WAN. The LAN (and the VPN)
may go out through the WAN, masqueraded when `wan.nat` is on.

The table is `inet`: each service rule names interfaces and ports, so it holds for
IPv4 and IPv6 alike. For IPv6 on the LAN (`lan_net6`, the LAN prefix) the router
also accepts the ICMPv6 that IPv6 needs (RFC 4890: errors, echo, neighbour discovery;
router solicitations and MLD from the LAN; router advertisements on the WAN), DHCPv6
from the LAN, and takes IPv6 from the LAN only from the LAN prefix, link-local
addresses or `::` (DAD).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import sqlite3
import subprocess
import time
from dataclasses import dataclass, replace

from appliance.domain.ipv6 import lan_address6
from appliance.errors import NixieError
from netservices.listen import parse_listen

TABLE = "nixie"
_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


class FirewallError(NixieError):
    http_status = 500


def _port(listen: str) -> int:
    return parse_listen(listen)[2]


def _ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise FirewallError(f"bad interface name {name!r}")
    return f'"{name}"'


@dataclass(frozen=True)
class FirewallSpec:
    lan_if: str
    lan_net: str
    wan_if: str | None = None
    vpn_if: str | None = None
    vpn_net: str | None = None
    vpn_port: int | None = None
    nat: bool = True
    admin_tcp: tuple[int, ...] = (8080, 22)
    boot_tcp: tuple[int, ...] = (8081,)
    boot_udp: tuple[int, ...] = (67, 4011, 69)
    dns_port: int | None = 53
    vpn_to_lan: bool = True
    lan_net6: str | None = None  # the LAN's IPv6 prefix when the router serves IPv6 there
    dhcp6: bool = False  # DHCPv6 server on the LAN (udp 547)
    boot_remote: bool = False  # boot.remote: HTTP boot also from the WAN and VPN (media tokens)

    @classmethod
    def from_config(cls, cfg, *, ssh_port: int | None = None,
                    conn: sqlite3.Connection | None = None) -> FirewallSpec:
        """With IPv6 on the LAN, its prefix is lan.address6's, or the stored ULA's
        (read, or made, through `conn`)."""
        vpn = cfg.vpn
        address6 = None
        if cfg.ipv6_lan:
            address6 = lan_address6(conn, cfg.lan.address6) if conn is not None else cfg.lan.address6
        ssh_port = ssh_port or cfg.firewall.ssh_port
        dns_ports = sorted({_port(x) for x in cfg.dns.listen}) if cfg.dns.enable else []
        return cls(
            lan_if=cfg.lan.interface,
            lan_net=str(cfg.lan_interface.network),
            wan_if=cfg.wan.interface,
            vpn_if=vpn.interface if vpn.enable else None,
            vpn_net=str(ipaddress.IPv4Interface(vpn.address).network) if vpn.enable else None,
            vpn_port=vpn.listen_port if vpn.enable else None,
            nat=cfg.wan.nat,
            admin_tcp=tuple(sorted({*(_port(x) for x in cfg.web.listen), ssh_port})),
            boot_tcp=(_port(cfg.boot.http_listen),),
            boot_udp=tuple(sorted({67, 4011, *(_port(x) for x in cfg.tftp.listen)}))
            if cfg.dhcp.mode != "off" else tuple(sorted({_port(x) for x in cfg.tftp.listen})),
            dns_port=dns_ports[0] if dns_ports else None,
            lan_net6=str(ipaddress.IPv6Interface(address6).network) if address6 else None,
            dhcp6=bool(address6) and cfg.dhcp6.mode != "off",
            boot_remote=cfg.boot.remote,
        )


def spec_for(cfg, settings, conn: sqlite3.Connection | None = None) -> FirewallSpec:
    """The spec for the config with the (confirmed or pending) network settings' LAN and WAN
    interfaces, which may differ from the config's (a bridge made in the UI)."""
    base = FirewallSpec.from_config(cfg, conn=conn)
    return replace(base, lan_if=settings.lan_interface,
                   lan_net=str(ipaddress.IPv4Interface(settings.lan_address).network),
                   wan_if=settings.wan_interface if settings.wan_mode != "none" else None)


ICMP6_ALWAYS = ("destination-unreachable", "packet-too-big", "time-exceeded",
                "parameter-problem", "echo-request")
MLD = ("mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report")


def _ipv6_rules(spec: FirewallSpec, lan: str, wan: str | None) -> list[str]:
    """The input rules IPv6 needs; the LAN's source check comes before the services."""
    net6 = ipaddress.IPv6Network(spec.lan_net6)
    rules = [
        f"icmpv6 type {_set(ICMP6_ALWAYS)} accept comment \"ICMPv6 errors and echo\"",
        "ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept "
        "comment \"IPv6 neighbour discovery\"",
        f"iifname {lan} ip6 hoplimit 255 icmpv6 type nd-router-solicit accept "
        "comment \"router solicitations\"",
        f"iifname {lan} ip6 saddr {{ ::, fe80::/10 }} icmpv6 type {_set(MLD)} accept comment \"MLD\"",
    ]
    if wan:
        rules.append(f"iifname {wan} ip6 hoplimit 255 icmpv6 type nd-router-advert accept "
                     "comment \"router advertisements on the WAN\"")
    rules.append(f"iifname {lan} ip6 saddr != {{ ::, fe80::/10, {net6} }} counter drop "
                 "comment \"IPv6 from the LAN only from its prefix\"")
    if spec.dhcp6:
        rules.append(f"iifname {lan} udp dport 547 accept comment \"DHCPv6\"")
    return rules


def _set(values) -> str:
    values = list(values)
    return str(values[0]) if len(values) == 1 else "{ " + ", ".join(str(v) for v in values) + " }"


def render(spec: FirewallSpec) -> str:
    """The whole ruleset as `nft -f` text; replaces table inet nixie atomically."""
    lan = _ifname(spec.lan_if)
    ipaddress.IPv4Network(spec.lan_net)
    trusted = [lan]
    if spec.vpn_if:
        trusted.append(_ifname(spec.vpn_if))
    wan = _ifname(spec.wan_if) if spec.wan_if else None
    inside = _set(trusted)

    inp = [
        "ct state established,related accept",
        "ct state invalid drop",
        'iifname "lo" accept',
        "ip protocol icmp icmp type { echo-request, destination-unreachable, time-exceeded } accept",
    ]
    if spec.lan_net6:
        inp += _ipv6_rules(spec, lan, wan)
    if spec.admin_tcp:
        inp.append(f"iifname {inside} tcp dport {_set(spec.admin_tcp)} accept comment \"admin UI and SSH\"")
    if spec.boot_udp:
        inp.append(f"iifname {lan} udp dport {_set(spec.boot_udp)} accept comment \"DHCP, proxyDHCP, TFTP\"")
    if spec.boot_tcp:
        inp.append(f"iifname {lan} tcp dport {_set(spec.boot_tcp)} accept comment \"HTTP boot\"")
        outside = [_ifname(i) for i in (spec.vpn_if, spec.wan_if) if i]
        if spec.boot_remote and outside:
            inp.append(f"iifname {_set(outside)} tcp dport {_set(spec.boot_tcp)} accept "
                       "comment \"HTTP boot beyond the LAN (media tokens)\"")
    if spec.dns_port:
        inp.append(f"iifname {inside} meta l4proto {{ tcp, udp }} th dport {spec.dns_port} accept comment \"DNS\"")
    if wan:
        inp.append(f"iifname {wan} udp sport 67 udp dport 68 accept comment \"DHCP client on the WAN\"")
        if spec.vpn_port:
            inp.append(f"iifname {wan} udp dport {spec.vpn_port} accept comment \"WireGuard\"")
    inp.append("counter drop")

    fwd = ["ct state established,related accept", "ct state invalid drop"]
    if wan:
        fwd.append(f"iifname {inside} oifname {wan} accept")
    if spec.vpn_if and spec.vpn_to_lan:
        fwd.append(f"iifname {_ifname(spec.vpn_if)} oifname {lan} accept")
    fwd.append("counter drop")

    lines = [
        "# generated by nixie: do not edit, it is replaced as a whole",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        *(f"\t\t{r}" for r in inp),
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;",
        *(f"\t\t{r}" for r in fwd),
        "\t}",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        "\t}",
    ]
    if wan and spec.nat:
        sources = [spec.lan_net] + ([spec.vpn_net] if spec.vpn_net else [])
        lines += [
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            f"\t\toifname {wan} ip saddr {_set(sources)} masquerade",
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _nft(args: list[str], text: str | None, nft: str, netns: str | None) -> str:
    cmd = [nft, *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    try:
        r = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise FirewallError(f"{cmd[0]} is not installed (package nftables)") from None
    if r.returncode != 0:
        raise FirewallError(f"nft {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def apply(text: str, *, nft: str = "nft", netns: str | None = None) -> None:
    """Check, then load the ruleset in one transaction (all or nothing)."""
    _nft(["-c", "-f", "-"], text, nft, netns)
    _nft(["-f", "-"], text, nft, netns)


def remove(*, nft: str = "nft", netns: str | None = None) -> None:
    _nft(["-f", "-"], f"table inet {TABLE}\ndelete table inet {TABLE}\n", nft, netns)


def current(*, nft: str = "nft", netns: str | None = None) -> str:
    """What the kernel holds now (for the UI), or '' if the table is absent."""
    try:
        return _nft(["list", "table", "inet", TABLE], None, nft, netns)
    except FirewallError:
        return ""


def apply_config(cfg, **kw) -> str:
    text = render(FirewallSpec.from_config(cfg))
    apply(text, **kw)
    return text


class FirewallService:
    """Applies the ruleset of the runtime config (file, overrides and confirmed network
    settings resolved) when `nixie serve` starts (firewall.enable), then idles; a
    settings change that touches it builds a new one, which applies again. Stopping
    serve leaves the rules in place: a router does not open up when it stops."""

    name = "firewall"

    def __init__(self, cfg, store=None):
        self.cfg = cfg
        self.store = store
        self._stats: dict = {}

    def run(self, stop) -> None:
        conn = self.store.conn() if self.store is not None else None
        text = render(FirewallSpec.from_config(self.cfg, conn=conn))
        apply(text)
        self._stats = {"applied_at": time.time(),
                       "ruleset_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
        stop.wait()

    def stats(self) -> dict:
        return dict(self._stats)
