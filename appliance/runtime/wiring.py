"""The composition root: the only module that names the concrete servers
(`netservices`), the web UI's `create_app`, and resolves the one runtime config.

`Runtime` resolves the config file ⊕ the admin's overrides ⊕ the confirmed
network settings (`appliance.domain.settings.effective_config`) into the
`Config` every service is built from. Each service is a `Part`: how to build it
from a config, which keys it is built from, and, where it can, how to take a new
config without a restart (`retune`). `ConfigApplier` (service `config`) watches
the stored desired state and, within a second of a change, retunes or rebuilds
only the parts whose keys changed: DHCP keeps its leases and its socket, HTTP
boot renders the next script with the new menu and kernel parameters, the build
worker uses the new builder settings from its next build. A part that fails
to take the change (its new instance fails to start) is put back as it was, and
the failure is recorded (`settings.apply_status`) and is an event.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.config.resolve import changed_keys, resolve
from appliance.config.schema import Config
from appliance.domain import events, settings
from appliance.domain.boot_backend import SqliteBackend
from appliance.domain.ipv6 import default_range6, lan_address6, server_duid6
from appliance.domain.lease_store import SqliteLeaseStore
from appliance.domain.lease_store6 import SqliteLease6Store
from appliance.errors import ConfigError
from appliance.nix.binary_cache import create_binary_cache
from appliance.nix.bootartifacts import StoreBootArtifacts
from appliance.nix.buildworker import BuildWorker
from appliance.nix.gc import GcService
from appliance.router.address6 import ensure_address6
from appliance.router.bmc.poller import PowerPoller
from appliance.router.discovery import DiscoveryService
from appliance.router.firewall import FirewallService
from appliance.router.network import NetworkWatchdog
from appliance.router.vpn import VpnService
from appliance.runtime.reboot_watch import RebootAfterBuildWatcher
from appliance.runtime.supervisor import Supervisor
from appliance.runtime.webserver import (
    WebService,
    WebWorkers,
    prepare_tls,
    secret_key,
    worker_count,
)
from appliance.state.db import Store, now
from appliance.state.status import with_storage
from netservices.dhcp.engine import DhcpSettings
from netservices.dhcp.server import DhcpService
from netservices.dhcp6.engine import Dhcp6Settings
from netservices.dhcp6.server import Dhcp6Service
from netservices.dns import make_dns_service
from netservices.httpboot import BootSettings, HttpBootService, create_boot_app
from netservices.listen import parse_listen
from netservices.ra.engine import RaSettings
from netservices.ra.server import RaService
from netservices.tftp import TftpService
from webui import create_app
from webui.app import WebContext

log = logging.getLogger("nixie.wiring")

APPLY_POLL_SECONDS = 0.5
SETTLE_SECONDS = 0.8  # how long a rebuilt service must run before the change counts as applied
DEFER_SECONDS = 1.0  # a deferred part's rebuild waits this long after the outcome is recorded


@dataclass(frozen=True)
class Part:
    """One supervised service as the composition root knows it."""

    name: str
    keys: tuple[str, ...]  # dotted keys or sections ("dhcp") it is built from
    build: Callable[[Config], Any | None]  # None: off in this config
    retune: Callable[[Any, Config], bool] | None = None  # in place; False: rebuild it
    live: tuple[str, ...] = ()  # the keys `retune` can take; a change to any other rebuilds
    # applied after the outcome is recorded (and DEFER_SECONDS later): rebuilding it cuts
    # the connection the change came in on, whose answer waits for that outcome
    deferred: bool = False

    def affected(self, changed: dict[str, Any]) -> bool:
        return any(_under(k, self.keys) for k in changed)

    def retunable(self, changed: dict[str, Any]) -> bool:
        return self.retune is not None and all(_under(k, self.live) for k in changed)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    """`key` is one of `prefixes` or inside one of them (a section)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def web_app(cfg: Config, store: Store, health):
    """The admin web UI's Flask app (in serve, or in a web worker process). `cfg` is
    the config file: the UI layers the stored overrides on it per request."""
    events.BUDGET.configure(cfg.retention.anonymous_events_per_minute)  # failed logins
    return create_app(WebContext(store=store, config=cfg, health=health,
                                 secret_key=secret_key(cfg)))


def boot_local_nets(cfg: Config) -> tuple[str, ...]:
    """Where boot scripts need no media token: the LAN (IPv4, its IPv6 /64, link-local,
    unique-local: the generated ULA) and `boot.trusted_networks`. Everywhere else (VPN, WAN, routed) a token is required."""
    nets = [str(cfg.lan_interface.network), "fe80::/10", "fc00::/7", *cfg.boot.trusted_networks]
    if cfg.lan.address6:
        nets.append(str(ipaddress.IPv6Interface(cfg.lan.address6).network))
    return tuple(nets)


def boot_settings(cfg: Config, router6: str | None = None, cache_key: str | None = None
                  ) -> BootSettings:
    """HTTP boot's settings; `router6` the router's LAN IPv6 address when IPv6 runs on
    the LAN (hosts that fetch their script over IPv6 get IPv6 URLs); `cache_key` the
    binary cache's public key, which install and cached boots get as `nixie.cache_key=`."""
    return BootSettings(base_url=cfg.boot_base_url, menu=cfg.boot.menu,
                        menu_timeout_seconds=cfg.boot.menu_timeout_seconds,
                        cmdline=cfg.boot.cmdline, unknown_clients=cfg.dhcp.unknown_clients,
                        base_url6="" if cfg.boot.public_url else boot_url6(cfg, router6),
                        local_nets=boot_local_nets(cfg), cache_key=cache_key or "")


def _v6_host(listen: str, router6: str | None) -> str | None:
    """The IPv6 address a listener is reachable on, or None (an IPv4 listener)."""
    _, host, _ = parse_listen(listen)
    if ":" not in host:
        return None
    return router6 if host == "::" else host


def lan_listeners(c: Config, key: str, listens: list[str], router6: str | None) -> list[str]:
    """`listens` (the value of listener `key`), and, when the key was left to its default
    and IPv6 runs on the LAN (`router6` is the router's LAN IPv6 address), the same port
    on the LAN's IPv6 address: never any other address."""
    if router6 is None or not c.listen_is_default(key):
        return list(listens)
    return [*listens, f"[{router6}]:{parse_listen(listens[0])[2]}"]


def dns_listen(c: Config, router6: str) -> list[str]:
    """Where DNS listens: dns.listen; left null, the LAN address and, with IPv6 on the
    LAN, the router's LAN IPv6 address too (port 53)."""
    return lan_listeners(c, "dns.listen", c.dns.listen, router6 if c.ipv6_lan else None)


def tftp_listeners(c: Config, router6: str | None) -> list[str]:
    return lan_listeners(c, "tftp.listen", c.tftp.listen, router6)


def http_boot_listeners(c: Config, router6: str | None) -> list[str]:
    return lan_listeners(c, "boot.http_listen", [c.boot.http_listen], router6)


def web_listeners(c: Config, router6: str | None) -> list[str]:
    """Where the admin web UI (and the REST API, /metrics) listens: web.listen, and left
    null with IPv6 on the LAN, the router's LAN IPv6 address too (same port)."""
    return lan_listeners(c, "web.listen", c.web.listen, router6)


def router6_of(c: Config, conn: sqlite3.Connection) -> str | None:
    """The router's LAN IPv6 address (no prefix) when IPv6 runs on the LAN, else None:
    lan.address6 or the stored ULA (made and stored on first use)."""
    if not c.ipv6_lan:
        return None
    return str(ipaddress.IPv6Interface(lan_address6(conn, c.lan.address6)).ip)


def web_listen_now(c: Config, conn: sqlite3.Connection) -> list[str]:
    """Every address the web UI listens on with config `c` (`web_listeners` with the
    router's LAN IPv6 address): what serve binds and what `nixie status` shows."""
    return web_listeners(c, router6_of(c, conn))


def boot_url6(c: Config, router6: str | None) -> str:
    """http://[addr]:port of HTTP boot over IPv6, or "" when it does not listen on IPv6."""
    for listen in http_boot_listeners(c, router6):
        host = _v6_host(listen, router6)
        if host:
            return f"http://[{host}]:{parse_listen(listen)[2]}"
    return ""


def _dns6(c: Config, router6: str) -> tuple[str, ...]:
    """DNS servers for IPv6 clients (DHCPv6 option 23, RA RDNSS): dhcp6.dns_servers, else
    the router when its DNS server listens on IPv6, else none."""
    if c.dhcp6.dns_servers is not None:
        return tuple(c.dhcp6.dns_servers)
    if c.dns.enable:
        hosts = [h for h in (_v6_host(x, router6) for x in dns_listen(c, router6)) if h]
        if hosts:
            return (hosts[0],)
    return ()


def dhcp6_settings(c: Config, address6: str, duid: bytes) -> Dhcp6Settings:
    """DHCPv6 from the config and the LAN's IPv6 address. Boot URLs point at TFTP and
    HTTP boot only when they listen on IPv6."""
    router6 = str(ipaddress.IPv6Interface(address6).ip)
    first, last = c.dhcp6.range or default_range6(address6)
    tftp = next((h for h in (_v6_host(x, router6) for x in tftp_listeners(c, router6)) if h), "")
    base = boot_url6(c, router6)
    return Dhcp6Settings(
        mode=c.dhcp6.mode, interface=c.lan.interface, server_ip=router6,
        prefix=str(ipaddress.IPv6Interface(address6).network), range_first=first,
        range_last=last, server_duid=duid, preferred_seconds=c.dhcp6.preferred_seconds,
        valid_seconds=c.dhcp6.valid_seconds, dns_servers=_dns6(c, router6),
        domains=(c.lan.domain,), rapid_commit=c.dhcp6.rapid_commit,
        unknown_clients=c.dhcp.unknown_clients, boot_base_url=base, tftp_server=tftp)


def ra_settings(c: Config, address6: str) -> RaSettings:
    """The advertisement: the LAN prefix, M/O from the DHCPv6 mode, RDNSS and DNSSL."""
    router6 = str(ipaddress.IPv6Interface(address6).ip)
    return RaSettings(
        interface=c.lan.interface, prefix=str(ipaddress.IPv6Interface(address6).network),
        managed=c.dhcp6.mode == "stateful", other=c.dhcp6.mode != "off",
        router_lifetime=c.ra.router_lifetime_seconds, max_interval=float(c.ra.interval_seconds),
        valid_seconds=c.ra.prefix_valid_seconds, preferred_seconds=c.ra.prefix_preferred_seconds,
        rdnss=_dns6(c, router6), dnssl=(c.lan.domain,), mtu=c.ra.mtu or None)


class Runtime:
    """The resolved config and every part, built over one store."""

    def __init__(self, base: Config, store: Store, health: Callable[[], dict[str, Any]]):
        self.base = base
        self.store = store
        self.health = health
        self.backend = SqliteBackend(store)
        self.cfg = settings.effective_config(base, store.conn())
        # the config a part still runs because it could not take a later one (it was
        # put back as it was); every other part runs `cfg`
        self.lagging: dict[str, Config] = {}
        self.parts = self._parts()

    # ---------------------------------------------------------------- parts
    def _parts(self) -> list[Part]:
        return [
            Part("dhcp", ("lan", "dhcp", "boot"), self._dhcp, _retune_dhcp,
                 live=("lan", "dhcp", "boot")),
            Part("tftp", ("tftp", "state_dir", "lan", "ra.enable", "dhcp6.mode"), self._tftp),
            Part("ra", ("lan", "ra", "dhcp6.mode", "dhcp6.dns_servers", "dns"), self._ra,
                 self._retune_ra, live=("ra", "dhcp6.mode", "dhcp6.dns_servers", "dns",
                                   "lan.domain")),
            Part("dhcp6", ("lan", "dhcp6", "dhcp.unknown_clients", "dhcp.lease_sync", "boot",
                           "tftp.listen", "dns"), self._dhcp6, self._retune_dhcp6,
                 live=("dhcp6", "dhcp.unknown_clients", "boot", "tftp.listen", "dns",
                       "lan.domain")),
            Part("dns", ("dns", "lan", "vpn", "ra.enable", "dhcp6.mode"), self._dns),
            Part("httpboot", ("boot", "dhcp.unknown_clients", "lan", "netboot", "nix",
                              "ra.enable", "dhcp6.mode"),
                 self._httpboot, self._retune_httpboot,
                 live=("boot.menu", "boot.menu_timeout_seconds", "boot.cmdline",
                       "boot.public_url", "dhcp.unknown_clients", "lan")),
            Part("builder", ("builder", "nix"), lambda c: BuildWorker(c, self.store),
                 _retune_builder, live=("builder", "nix")),
            Part("web", ("web", "lan", "ra.enable", "dhcp6.mode"), self._web, self._retune_web,
                 live=("lan", "ra.enable", "dhcp6.mode"), deferred=True),
            Part("discovery", ("lan.interface",),
                 lambda c: DiscoveryService(self.store, c.lan.interface)),
            Part("network", ("network",),
                 lambda c: NetworkWatchdog(self.store, c.state_dir, cfg=c)),
            Part("vpn", ("vpn", "wan"), lambda c: VpnService(c, self.store) if c.vpn.enable else None),
            Part("firewall", ("firewall", "lan", "wan", "vpn", "dns", "web", "boot", "tftp",
                              "dhcp.mode", "ra.enable", "dhcp6.mode"),
                 lambda c: FirewallService(c, self.store) if c.firewall.enable else None),
            Part("retention", ("retention", "state_dir"),
                 lambda c: events.RetentionService(self.store, c)),
            Part("bmc", ("bmc",),
                 lambda c: PowerPoller(self.store, c.bmc.poll_seconds)
                 if c.bmc.poll_seconds else None),
            Part("reboot-after-build", ("lan.interface",),
                 lambda c: RebootAfterBuildWatcher(self.store, c.lan.interface)),
            Part("gc", ("gc", "nix", "state_dir"), lambda c: GcService(c, self.store)),
        ]

    def _dhcp(self, c: Config):
        if c.dhcp.mode == "off":
            return None
        return DhcpService(DhcpSettings.from_config(c),
                           SqliteLeaseStore(c.db_path, c.dhcp.lease_sync))

    def address6(self, c: Config) -> str:
        """The router's LAN IPv6 address/prefix: lan.address6 or the stored ULA."""
        return lan_address6(self.store.conn(), c.lan.address6)

    def router6(self, c: Config) -> str | None:
        """The router's LAN IPv6 address when IPv6 runs on the LAN, else None."""
        return router6_of(c, self.store.conn())

    def _prepare_listeners(self, c: Config, listens: list[str]) -> Callable[[], None] | None:
        """Put the LAN's IPv6 address in place first when a listener binds it."""
        router6 = self.router6(c)
        if router6 is None or not any(_v6_host(x, router6) == router6 for x in listens):
            return None
        return self._prepare6(c)

    def _prepare6(self, c: Config) -> Callable[[], None]:
        address6 = self.address6(c)
        return lambda: ensure_address6(c.lan.interface, address6)

    def _ra(self, c: Config):
        if not c.ra.enable or not c.ipv6_lan:
            return None
        return RaService(ra_settings(c, self.address6(c)), prepare=self._prepare6(c))

    def _dhcp6(self, c: Config):
        if c.dhcp6.mode == "off":
            return None
        settings6 = dhcp6_settings(c, self.address6(c), server_duid6(self.store.conn()))
        return Dhcp6Service(settings6, SqliteLease6Store(c.db_path, c.dhcp.lease_sync),
                            prepare=self._prepare6(c))

    def _retune_ra(self, svc: RaService, c: Config) -> bool:
        return c.ra.enable and svc.reconfigure(ra_settings(c, self.address6(c)))

    def _retune_dhcp6(self, svc: Dhcp6Service, c: Config) -> bool:
        return c.dhcp6.mode != "off" and svc.reconfigure(
            dhcp6_settings(c, self.address6(c), server_duid6(self.store.conn())))

    def _tftp(self, c: Config):
        listens = tftp_listeners(c, self.router6(c))
        return TftpService(c.tftp_root, listens, ipxe_dir=c.tftp.ipxe_dir,
                           events=self.backend, hosts=self.backend, workers=c.tftp.workers,
                           busy_poll_us=c.tftp.busy_poll_us,
                           prepare=self._prepare_listeners(c, listens))

    def _dns(self, c: Config):
        if not c.dns.enable:
            return None
        vpn = [str(ipaddress.IPv4Interface(c.vpn.address).network)] if c.vpn.enable else []
        listen, network6, router6 = list(c.dns.listen), None, None
        if c.ipv6_lan:  # AAAA, ip6.arpa and clients of the LAN prefix; listening on it
            address6 = ipaddress.IPv6Interface(self.address6(c))
            network6, router6 = str(address6.network), str(address6.ip)
            listen = dns_listen(c, router6)
        return make_dns_service(listen=listen, domain=c.lan.domain,
                                network=str(c.lan_interface.network), directory=self.backend,
                                upstreams=c.dns.upstream, clients=vpn,
                                router_ip=str(c.lan_interface.ip), network6=network6,
                                router_ip6=router6, prepare=self._prepare_listeners(c, listen))

    def _httpboot(self, c: Config):
        """HTTP boot on boot.http_listen: scripts, kernels and initrds from the image
        builder, the agent API, and the binary cache under /nix-cache."""
        router6 = self.router6(c)
        cache = create_binary_cache(c, events=self.backend.event)
        app = create_boot_app(hosts=self.backend, events=self.backend,
                              artifacts=StoreBootArtifacts(c, self.store), agent=self.backend,
                              settings=boot_settings(c, router6, cache.public_key),
                              tftp_root=str(c.tftp_root), mounts={"/nix-cache": cache})
        listens = http_boot_listeners(c, router6)
        return HttpBootService(app, listens, prepare=self._prepare_listeners(c, listens))

    def _retune_httpboot(self, svc: HttpBootService, c: Config) -> bool:
        router6 = self.router6(c)
        if svc.listen != http_boot_listeners(c, router6):
            return False  # e.g. lan.address6 moved: new sockets
        # the next request renders with these (the cache key stays: the cache is not rebuilt)
        svc.app.settings = boot_settings(c, router6, svc.app.settings.cache_key)
        return True

    def _web(self, c: Config):
        """`web.workers` processes sharing the listeners, or (1) waitress in this process;
        on `web_listeners`, the LAN's IPv6 address put in place before they bind."""
        n = worker_count(c.web.workers)
        listens = web_listeners(c, self.router6(c))
        prepare = self._prepare_listeners(c, listens)
        prepare_tls(c, listens)  # the certificate made (first start) before a server loads it
        if n == 1:
            return WebService(web_app(self.base, self.store, self.health), c, listen=listens,
                              prepare=prepare)
        secret_key(c)  # made once here, before the workers read it
        return WebWorkers(self.base, n, listen=listens, prepare=prepare)

    def _retune_web(self, svc: WebService | WebWorkers, c: Config) -> bool:
        """A LAN or IPv6 change leaves the web UI running unless its listeners move (the
        admin's own connection is not cut for a change of lan.domain)."""
        return svc.listen == web_listeners(c, self.router6(c))

    def services(self) -> list[Any]:
        """Every service `serve` supervises, built from the resolved config."""
        out = [p.build(self.cfg) for p in self.parts]
        return [s for s in out if s is not None]


# ------------------------------------------------------------------ retuning in place

def _retune_dhcp(svc: DhcpService, c: Config) -> bool:
    return c.dhcp.mode != "off" and svc.reconfigure(DhcpSettings.from_config(c))


def _retune_builder(svc: BuildWorker, c: Config) -> bool:
    return svc.reconfigure(c)


# ------------------------------------------------------------------ applying changes

class ConfigApplier:
    """Service `config`: applies a changed desired state to the running services."""

    name = "config"

    def __init__(self, runtime: Runtime, supervisor: Supervisor,
                 poll: float = APPLY_POLL_SECONDS):
        self.runtime = runtime
        self.supervisor = supervisor
        self.poll = poll
        self.applied = 0
        self.failed = 0
        self._seen = self._inputs()

    def _inputs(self) -> str:
        conn = self.runtime.store.conn()
        return json.dumps([settings.overrides(conn), settings.network(conn)], sort_keys=True)

    def stats(self) -> dict[str, Any]:
        return {"applied": self.applied, "failed": self.failed}

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.poll):
            inputs = self._inputs()
            if inputs != self._seen:
                self._seen = inputs
                self.apply()

    def apply(self) -> dict[str, Any]:
        """Resolve the stored desired state and apply what changed. Returns (and
        records) {at, ok, error, changed, services}."""
        rt = self.runtime
        conn = rt.store.conn()
        who = (settings.last_change(conn) or {}).get("by")
        try:
            new = resolve(rt.base, settings.overrides(conn), settings.network(conn))
        except ConfigError as e:
            return self._record(conn, {"ok": False, "error": str(e), "changed": {}}, who)
        changed = changed_keys(rt.cfg, new)
        if not changed:
            return self._record(conn, {"ok": True, "error": None, "changed": {}, "services": []},
                                who, quiet=True)
        done, errors, later = [], [], []
        for part in rt.parts:
            running = rt.lagging.get(part.name, rt.cfg)
            part_changed = changed_keys(running, new)
            if not part.affected(part_changed):
                continue
            if part.deferred:
                svc = self.supervisor.get(part.name)
                if svc is not None and part.retunable(part_changed) and part.retune(svc, new):
                    rt.lagging.pop(part.name, None)
                    continue  # it takes the change as it runs: nothing to rebuild
                later.append((part, running, part_changed))
                done.append(part.name)
                continue
            self._apply_one(part, running, new, part_changed, done, errors)
        rt.cfg = new
        status = self._record(conn, self._status(changed, done, errors), who)
        if later:
            done = [n for n in done if n not in {p.name for p, _, _ in later}]
            before = len(errors)
            for part, running, part_changed in later:
                self._apply_one(part, running, new, part_changed, done, errors,
                                pause=DEFER_SECONDS)
            if len(errors) > before:  # the first record said it was being applied
                status = self._record(conn, self._status(changed, done, errors), who)
        return status

    @staticmethod
    def _status(changed: dict[str, Any], done: list[str], errors: list[str]) -> dict[str, Any]:
        return {"ok": not errors, "error": "; ".join(errors) or None,
                "changed": {k: list(v) for k, v in changed.items()}, "services": list(done)}

    def _apply_one(self, part: Part, running: Config, new: Config, changed: dict[str, Any],
                   done: list[str], errors: list[str], pause: float = 0.0) -> None:
        err, touched = self._apply_part(part, running, new, changed, pause)
        if err:
            errors.append(f"{part.name}: {err}")
            self.runtime.lagging[part.name] = running
        else:
            if touched and part.name not in done:
                done.append(part.name)
            self.runtime.lagging.pop(part.name, None)

    def _apply_part(self, part: Part, old_cfg: Config, new_cfg: Config,
                    changed: dict[str, Any], pause: float = 0.0) -> tuple[str | None, bool]:
        """Retune or rebuild one part (a rebuild `pause` s from now); on failure put the
        old one back. Returns (the error, whether a running service took the change)."""
        sup = self.supervisor
        svc = sup.get(part.name)
        try:
            if svc is not None and part.retunable(changed) and part.retune(svc, new_cfg):
                return None, True
            fresh = part.build(new_cfg)
        except Exception as e:  # noqa: BLE001 - a bad change must not stop the appliance
            log.warning("could not apply settings", exc_info=True, extra={"service": part.name})
            return f"{type(e).__name__}: {e}", False
        if fresh is None and svc is None:
            return None, False  # off before and after
        time.sleep(pause)
        sup.replace(part.name, fresh)
        if fresh is None:
            return None, True  # turned off
        error = self._settled(part.name)
        if error is None:
            return None, True
        log.warning("service did not start with the new settings; restoring it",
                    extra={"service": part.name, "error": error})
        sup.replace(part.name, part.build(old_cfg))
        return error, False

    def _settled(self, name: str) -> str | None:
        """None once the rebuilt service ran SETTLE_SECONDS without failing."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            st = self.supervisor.status.get(name)
            if st is not None and st.restarts:
                return st.last_error or "failed to start"
            time.sleep(0.05)
        return None

    def _record(self, conn, status: dict[str, Any], who: str | None, quiet: bool = False
                ) -> dict[str, Any]:
        status = {"at": now(), "by": who, **status}
        settings.record_apply(conn, status)
        if quiet:
            return status
        changes = ", ".join(f"{k}: {json.dumps(a)} → {json.dumps(b)}"
                            for k, (a, b) in status["changed"].items())
        by = f" (by {who})" if who else ""
        if status["ok"]:
            self.applied += 1
            events.record(conn, "settings.applied",
                          f"applied{by}: {changes} [{', '.join(status['services']) or 'no service'}]",
                          data=status)
        else:
            self.failed += 1
            events.record(conn, "settings.apply_failed", f"not applied{by}: {status['error']}",
                          level="error", data=status)
        return status


def start(base: Config, store: Store) -> tuple[Runtime, Supervisor]:
    """Build every service and the applier over `store`; the supervisor is not started."""
    supervisor: Supervisor | None = None

    def health() -> dict[str, Any]:
        """The services' health, not ok with a warning while the disk is (nearly) full."""
        return with_storage(supervisor.health() if supervisor else {"ok": False, "services": {}},
                            base.state_dir)

    runtime = Runtime(base, store, health)
    supervisor = Supervisor(runtime.services())
    supervisor.add(ConfigApplier(runtime, supervisor))
    return runtime, supervisor
