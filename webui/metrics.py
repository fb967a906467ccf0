"""`GET /metrics`: Prometheus text format, on the admin web listener.

What it exports comes from two places, the same ones the rest of the UI reads: the
services' counters from the health report (`ctx.health()`, the one `/healthz` shows; in
a web worker process that is serve's heartbeat, at most a few seconds old), and the
state DB (builds, boots read back from the event log by `appliance.domain.boots`, agent
reports). Counters from the DB count what the retained log holds, so they can drop
when retention prunes it. The web request latency histogram is kept by every web
process; with worker processes (`web.workers`) they share it through files in RAM
(`appliance.runtime.webserver.metrics_dir`: /dev/shm, never the state disk, whose
filling would kill a worker writing through mmap; prometheus-client's multiprocess
mode), so any worker answers with the sum.

Who may scrape: a source address on loopback, the LAN, the VPN network or
`metrics.allow` (403 otherwise), with `Authorization: Bearer <token>` when
`metrics.token_file` is set (401 otherwise). It is not behind the admin login. One
rendering serves every scrape for up to a second (`fragments.cached`), so a flood of
scrapes costs one rendering a second."""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from appliance.domain import boots, overview
from appliance.domain.ipv6 import lan_prefix6
from appliance.state.db import now

from . import fragments
from .context import config, conn, ctx

bp = Blueprint("metrics", __name__)
ENDPOINT = "metrics.metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BOOT_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, float("inf"))
STEP_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, float("inf"))
BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, float("inf"))
AGENT_KINDS = ("host.booting", "host.booted", "host.installing", "host.installed",
               "host.failed", "agent.rejected")


# ------------------------------------------------------------------ who may scrape

def _allowed_networks(cfg) -> list:
    nets = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
            cfg.lan_interface.network]
    if cfg.vpn.enable:
        nets.append(ipaddress.IPv4Interface(cfg.vpn.address).network)
    prefix6 = lan_prefix6(conn(), cfg.lan.address6)  # configured, else the generated ULA
    if prefix6:
        nets.append(ipaddress.ip_network(prefix6))
    nets += [ipaddress.ip_network(n) for n in cfg.metrics.allow]
    return nets


def _source_allowed(cfg, addr: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((addr or "").split("%")[0])
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in _allowed_networks(cfg))


def _token(path: str) -> str | None:
    """The token in `path` (read at every scrape, so a new one counts at once), or None
    when the file is unreadable or empty."""
    try:
        return Path(path).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _check_access() -> Response | None:
    cfg = config()
    if not cfg.metrics.enable:
        abort(404)
    if not _source_allowed(cfg, request.remote_addr):
        return Response("metrics are served to the LAN and VPN only\n", 403,
                        content_type="text/plain")
    if cfg.metrics.token_file:
        want = _token(cfg.metrics.token_file)
        if want is None:
            return Response("metrics.token_file is unreadable or empty\n", 503,
                            content_type="text/plain")
        h = request.headers.get("Authorization", "")
        got = h[7:].strip() if h[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(got.encode(), want.encode()):
            return Response("wrong or missing bearer token\n", 401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return None


@bp.get("/metrics")
def metrics():
    denied = _check_access()
    if denied is not None:
        return denied
    body = fragments.cached("/metrics", lambda: _render(ctx().health()))
    return Response(str(body), 200, content_type=CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})


def _render(health: dict[str, Any]) -> str:
    state = _state()
    state["renders"] += 1
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Snapshot(health, conn(), state))
    reg.register(_Own(state))
    return generate_latest(reg).decode()


# ------------------------------------------------------------------ this process's own

def _state(app: Flask | None = None) -> dict[str, Any]:
    """This app's rendering count and request latency registry (`init_app` fills it)."""
    return (app or current_app).extensions.setdefault("nixie_metrics",
                                                      {"renders": 0, "registry": None})


class _Own:
    """The request latency histogram and the rendering count of this process."""

    def __init__(self, state: dict[str, Any]):
        self.state = state

    def collect(self):
        yield _count("nixie_metrics_renders", "Renderings of /metrics by this web process "
                     "(one serves every scrape for a second)", self.state["renders"])
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if shared:  # web worker processes: every worker's, summed
            reg = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(reg, shared)
            yield from reg.collect()
            return
        reg = self.state.get("registry")
        if reg is not None:
            yield from reg.collect()


def init_app(app: Flask) -> None:
    """Time every request of `app` into a histogram by blueprint (a fixed label set)."""
    reg = _state(app)["registry"] = CollectorRegistry(auto_describe=False)
    hist = Histogram("nixie_web_request_seconds", "Admin web requests by area, this web "
                     "process's own", ["area", "code"], registry=reg,
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    @app.before_request
    def _start():
        g.nixie_t0 = time.perf_counter()

    @app.after_request
    def _done(resp):
        t0 = g.get("nixie_t0")
        if t0 is not None:
            area = (request.blueprint or request.endpoint or "none").split(".")[0]
            hist.labels(area[:32], f"{resp.status_code // 100}xx").observe(time.perf_counter() - t0)
        return resp


# ------------------------------------------------------------------ the snapshot

def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _count(name: str, doc: str, value: float) -> CounterMetricFamily:
    """A counter without labels: one sample."""
    return CounterMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, labels: list[str], groups: dict[tuple, list[float]],
               buckets: tuple[float, ...]) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=labels)
    for key, values in sorted(groups.items()):
        counts = [(floatToGoString(b), sum(1 for v in values if v <= b)) for b in buckets]
        h.add_metric(list(key), counts, sum(values))
    return h


def _ints(d: Any) -> dict[str, int]:
    return {k: v for k, v in (d or {}).items() if isinstance(v, int)}


class _Snapshot:
    """Every exported family, from one health report and the DB."""

    def __init__(self, health: dict[str, Any], db, state: dict[str, Any]):
        self.health, self.db, self.state = health, db, state
        self.services = health.get("services") or {}

    def stats(self, name: str) -> dict[str, Any]:
        return (self.services.get(name) or {}).get("stats") or {}

    def collect(self):
        up = _gauge("nixie_service_up", "1 while the service runs, 0 otherwise", ["service"])
        for name, s in sorted(self.services.items()):
            up.add_metric([name], 1 if s.get("state") == "running" else 0)
        yield up
        for name, families in (("dhcp", lambda: self._dhcp("dhcp", "DHCPv4")),
                               ("dhcp6", lambda: self._dhcp("dhcp6", "DHCPv6")),
                               ("tftp", self._tftp), ("httpboot", self._httpboot),
                               ("dns", self._dns)):
            if name in self.services:  # a service turned off exports nothing
                yield from families()
        yield from self._builds()
        yield from self._boots()
        yield from self._agent()

    def _dhcp(self, svc: str, what: str):
        st = self.stats(svc)
        for direction in ("received", "sent"):
            c = _counter(f"nixie_{svc}_{direction}_messages", f"{what} messages {direction} by "
                         "type", ["type"])
            for t, n in sorted(_ints(st.get(direction)).items()):
                c.add_metric([t], n)
            yield c
        c = _counter(f"nixie_{svc}_dropped_messages", f"{what} messages dropped by reason",
                     ["reason"])
        for t, n in sorted(_ints(st.get("dropped")).items()):
            c.add_metric([t], n)
        yield c
        if svc == "dhcp":
            c = _counter("nixie_dhcp_boot_answers", "Boot answers to PXE clients by kind",
                         ["kind"])
            for t, n in sorted(_ints(st.get("boot")).items()):
                c.add_metric([t], n)
            yield c
            for name, key, src, doc in (("naks", "nak", "sent", "DHCPNAKs sent"),
                                        ("declines", "decline", "received",
                                         "DHCPDECLINEs received (an address in use)")):
                yield _count(f"nixie_dhcp_{name}", doc, (st.get(src) or {}).get(key, 0))
        pool = st.get("pool") or {}
        for key in ("size", "bound"):
            yield GaugeMetricFamily(f"nixie_{svc}_pool_{key}",
                                    f"{what} dynamic pool: {key} addresses", value=pool.get(key, 0))

    def _tftp(self):
        st = self.stats("tftp")
        yield _count("nixie_tftp_requests", "TFTP read requests", st.get("requests", 0))
        c = _counter("nixie_tftp_transfers", "TFTP transfers by how they ended", ["result"])
        for r in ("completed", "aborted", "failed"):
            c.add_metric([r], st.get(r, 0))
        yield c
        yield _count("nixie_tftp_sent_bytes", "TFTP data bytes sent", st.get("bytes_sent", 0))
        c = _counter("nixie_tftp_errors", "TFTP requests and transfers in trouble by kind",
                     ["kind"])
        for k in ("refused", "malformed", "timeouts", "retransmits", "socket_errors",
                  "dropped_per_client"):
            c.add_metric([k], st.get(k, 0))
        yield c

    def _httpboot(self):
        st = self.stats("httpboot")
        c = _counter("nixie_httpboot_responses", "HTTP boot responses by route and status",
                     ["route", "code"])
        for key, n in sorted((st.get("responses") or {}).items()):
            route, code = key.split(" ", 1)
            c.add_metric([route, code], n)
        yield c
        c = _counter("nixie_httpboot_transfers", "HTTP boot file transfers (kernel, initrd, "
                     "iPXE binary) by how they ended", ["file", "result"])
        for key, n in sorted((st.get("transfers") or {}).items()):
            c.add_metric(key.split(" ", 1), n)
        yield c
        c = _counter("nixie_httpboot_sent_bytes", "HTTP boot file bytes sent", ["file"])
        for what, n in sorted((st.get("bytes_sent") or {}).items()):
            c.add_metric([what], n)
        yield c

    def _dns(self):
        st = self.stats("dns")
        yield _count("nixie_dns_queries", "DNS queries received", st.get("queries", 0))
        c = _counter("nixie_dns_answers", "DNS queries by how they were answered", ["result"])
        for k in ("local", "cache_hits", "forwarded", "refused", "malformed", "notimp",
                  "truncated"):
            c.add_metric([k], st.get(k, 0))
        yield c
        c = _counter("nixie_dns_upstream_errors", "Forwarded queries upstream did not answer "
                     "well", ["kind"])
        for k in ("upstream_timeouts", "upstream_errors", "upstream_mismatched"):
            c.add_metric([k.removeprefix("upstream_")], st.get(k, 0))
        yield c
        yield SummaryMetricFamily("nixie_dns_upstream_seconds", "Answers from upstream "
                                  "resolvers and the time they took (mean = sum / count)",
                                  count_value=st.get("upstream_answers", 0),
                                  sum_value=st.get("upstream_ms", 0) / 1000)
        yield GaugeMetricFamily("nixie_dns_cache_entries", "Entries in the forwarding cache",
                                value=st.get("cache_entries", 0))

    def _builds(self):
        by = overview.builds_by_status(self.db)
        g_ = _gauge("nixie_builds", "Builds waiting or running", ["status"])
        for s in ("queued", "running"):
            g_.add_metric([s], by.get(s, 0))
        yield g_
        c = _counter("nixie_builds_finished", "Finished builds in the DB by outcome", ["status"])
        for s in ("succeeded", "failed", "cancelled"):
            c.add_metric([s], by.get(s, 0))
        yield c
        groups: dict[tuple, list[float]] = {}
        for b in overview.build_durations(self.db):
            groups.setdefault((b["status"],), []).append(max(0.0, b["seconds"]))
        yield _histogram("nixie_build_duration_seconds", "Build run time (start to end) by "
                         "outcome", ["status"], groups, BUILD_BUCKETS)

    def _boots(self):
        all_boots = boots.since(self.db, 0, now())
        total: dict[tuple, list[float]] = {}
        steps: dict[tuple, list[float]] = {}
        outcomes: dict[tuple[str, str], int] = {}
        for b in all_boots:
            fw = b.firmware or "unknown"
            outcomes[(fw, b.outcome)] = outcomes.get((fw, b.outcome), 0) + 1
            if b.outcome in ("booted", "installed"):
                total.setdefault((fw,), []).append(b.seconds or 0.0)
            for s in b.steps:
                if s.seconds is not None:
                    steps.setdefault((fw, s.name), []).append(s.seconds)
        c = _counter("nixie_boots", "Boots in the event log by firmware and outcome",
                     ["firmware", "outcome"])
        for (fw, outcome), n in sorted(outcomes.items()):
            c.add_metric([fw, outcome], n)
        yield c
        yield _histogram("nixie_boot_duration_seconds", "Power-on (first DHCP request) to "
                         "booted, by firmware", ["firmware"], total, BOOT_BUCKETS)
        yield _histogram("nixie_boot_step_seconds", "Time from one boot step to the next, "
                         "by firmware and step", ["firmware", "step"], steps, STEP_BUCKETS)

    def _agent(self):
        counts = overview.events_by_kind(self.db, AGENT_KINDS)
        c = _counter("nixie_agent_reports", "Agent reports in the event log by report",
                     ["report"])
        for k in AGENT_KINDS:
            c.add_metric([k.split(".", 1)[1]], counts.get(k, 0))
        yield c
