"""The appliance's implementation of `netservices.backend` over the state DB."""

from __future__ import annotations

from typing import Any

from appliance.domain import agent, events, hostkeys, hosts, localboot, machines, media
from appliance.state.db import Store, now
from netservices.backend import HostRecord, MediaGrant, NameRecord


class SqliteBackend:
    """HostDirectory + NameDirectory + EventSink over a Store (a connection per thread)."""

    def __init__(self, store: Store):
        self.store = store

    def host_by_mac(self, mac: str) -> HostRecord | None:
        h = hosts.find_by_mac(self.store.conn(), mac)
        return None if h is None else _record(h)

    def media_grant(self, token: str, client_ip: str) -> MediaGrant | None:
        """A live boot-media token's host (None for generic media) and base URL."""
        conn = self.store.conn()
        row = media.check_token(conn, token, client_ip)
        if row is None:
            return None
        h = hosts.get_host_by_id(conn, row["host_id"]) if row["host_id"] is not None else None
        # the whole record, MACs or none: its current generation (rollback) is the default
        return MediaGrant(host=None if h is None else _record(h), base_url=row["base_url"])

    def host_by_ip(self, ip: str) -> HostRecord | None:
        """The host a fetch from `ip` belongs to (attribution of boot events and transfer
        counters, never a permission): IPv4, the host whose MAC holds a current (offered
        or bound) lease on it; IPv6, the host of a bound DHCPv6 lease on it, else the host
        of the MAC its SLAAC interface identifier was made from (a lab stage 1 or an
        installer comes up by SLAAC after iPXE fetched the script by DHCPv6)."""
        conn = self.store.conn()
        if ":" not in ip:
            row = conn.execute(
                "SELECT mac FROM leases WHERE ip = ? AND state IN ('offered', 'bound') "
                "ORDER BY updated_at DESC LIMIT 1", (ip,)).fetchone()
            return self.host_by_mac(row[0]) if row else None
        row = conn.execute(
            "SELECT host_id FROM leases6 WHERE address = ? AND state = 'bound' "
            "AND expires > ? AND host_id IS NOT NULL", (ip, now())).fetchone()
        if row is not None:
            h = hosts.get_host_by_id(conn, row[0])
            if h is not None:
                return _record(h)
        mac = agent.mac_of_slaac(ip)
        return self.host_by_mac(mac) if mac else None

    def event(self, kind: str, message: str = "", *, level: str = "info",
              host_id: int | None = None, mac: str | None = None, ip: str | None = None,
              data: dict[str, Any] | None = None) -> None:
        conn = self.store.conn()
        if kind == "boot.script" and host_id is None and mac and (data or {}).get("script") \
                == "unknown":
            machines.seen_now(conn, mac, ip=ip)  # a machine waiting to be adopted
        events.record(conn, kind, message, level=level, host_id=host_id, mac=mac, ip=ip,
                      data=data)

    # ------------------------------------------------------------ NameDirectory
    def name_records(self) -> list[NameRecord]:
        """Every registered host (its reservation, else the last seen IP, else None: its
        name is still taken), then each host's IPv6 address (its DHCPv6 reservation, else
        the newest bound DHCPv6 lease of one of its MACs), then bound unexpired leases
        with a hostname, IPv4 then IPv6, oldest first, owned by their MAC.
        Which claims win is DNS's policy (`netservices.dns.zone.lan_records`)."""
        conn = self.store.conn()
        t = now()
        cols = {r["name"] for r in conn.execute("PRAGMA table_info(hosts)")}
        ip_expr = "coalesce(ip_reservation, ip)" if "ip_reservation" in cols else "ip"
        out = [NameRecord(r["name"], r["ip"], "host") for r in conn.execute(
            f"SELECT name, {ip_expr} AS ip FROM hosts ORDER BY id")]
        # a host's AAAA: its DHCPv6 reservation, else its MAC's bound DHCPv6 lease, else the
        # address it was last seen at over IPv6 (agent report, neighbour table: SLAAC)
        out += [NameRecord(r["name"], r["addr6"], "host") for r in conn.execute(
            "SELECT name, coalesce(ip6_reservation, (SELECT l.address FROM leases6 l "
            "WHERE l.host_id = hosts.id AND l.state = 'bound' "
            "AND l.expires > ? ORDER BY l.starts DESC LIMIT 1), hosts.ip6) AS addr6 FROM hosts "
            "WHERE addr6 IS NOT NULL ORDER BY id", (t,))]
        out += [NameRecord(r["hostname"], r["ip"], "lease", r["mac"]) for r in conn.execute(
            "SELECT hostname, ip, mac FROM leases WHERE state = 'bound' AND expires > ? "
            "AND hostname IS NOT NULL AND hostname != '' ORDER BY starts", (t,))]
        out += [NameRecord(r["hostname"], r["address"], "lease", r["mac"]) for r in conn.execute(
            "SELECT hostname, address, mac FROM leases6 WHERE state = 'bound' AND expires > ? "
            "AND hostname IS NOT NULL AND hostname != '' ORDER BY starts", (t,))]
        return out

    def agent_report(self, token: str, event: str, message: str, source_ip: str,
                     ssh_host_key: str | None = None) -> dict:
        """AgentSink: raises agent.AgentRejected (with .status 401/400/403/409).

        A disk token (an installed system booted from its disk) goes to
        `localboot.report`; a per-boot token to `agent.report`. The answer to an
        `installed` report carries the new disk token (`local_token`), which the
        installer writes onto the disk."""
        conn = self.store.conn()
        disk = localboot.verify_disk_token(conn, token)
        if disk is not None:
            return localboot.report(conn, disk, event, message, source_ip)
        boot = agent.verify_token(conn, token)
        result = agent.report(conn, token, event, message, source_ip)
        if boot is not None and ssh_host_key:
            hostkeys.pin(conn, boot.host_id, ssh_host_key, source_ip, token)
        if boot is not None and event in localboot.BOOT_MODE_OF_REPORT:
            localboot.set_boot_mode(conn, boot.host_id, localboot.boot_mode_of(boot.purpose,
                                                                               event))
        if boot is not None and event == "installed":
            result["local_token"] = localboot.issue_disk_token(conn, boot.host_id,
                                                               boot.generation_id, source_ip)
        return result


def _record(h: dict[str, Any]) -> HostRecord:
    """A host (as `hosts` returns it) as the boot services see it."""
    return HostRecord(name=h["name"], id=h["id"], macs=tuple(h["macs"]), mode=h["mode"],
                      state=h["state"], ip=h["ip"],
                      extra={"flake": h["flake"], "attr": h["attr"],
                             "current_generation": h["current_generation"]})
