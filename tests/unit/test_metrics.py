"""`/metrics` through the real web app: the Prometheus parser reads it, the numbers are
the services' counters and the boots in the event log; who may scrape (the LAN, a
token), and a scrape flood costs one rendering a second. Boots read back from events:
steps with durations, where a boot stopped and the hint."""

from __future__ import annotations

import ipaddress
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.domain import boots, builds, events, hosts
from appliance.domain.ipv6 import lan_address6
from tests.webapp import logged_in_client, make_app
from webui import fragments

pytestmark = pytest.mark.unit

HEALTH = {"ok": True, "services": {
    "web": {"state": "running", "restarts": 0},
    "dhcp": {"state": "running", "stats": {
        "received": {"discover": 7, "request": 6, "decline": 1}, "sent": {"offer": 7, "ack": 5,
                                                                        "nak": 1},
        "dropped": {"not_for_us": 2}, "boot": {"tftp": 3}, "pool": {"size": 100, "bound": 4}}},
    "tftp": {"state": "running", "stats": {"requests": 3, "completed": 2, "failed": 1,
                                           "bytes_sent": 12345, "refused": 1}},
    "httpboot": {"state": "running", "stats": {
        "responses": {"script 200": 2, "kernel 404": 1}, "transfers": {"kernel completed": 1},
        "bytes_sent": {"kernel": 999}}},
    "dns": {"state": "failed", "stats": {"queries": 10, "cache_hits": 4, "forwarded": 5,
                                         "upstream_timeouts": 1, "upstream_answers": 4,
                                         "upstream_ms": 250}},
}}


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state", lambda: HEALTH)
    yield app, store, cfg
    store.close()


def scrape(app, addr="127.0.0.1", **headers):
    return app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": addr}, headers=headers)


def _boot(conn, host_id, t0, firmware_arch=0, kernel_missing=False):
    """The events one boot leaves, at the given times (seconds after t0)."""
    def ev(dt, kind, level="info", data=None):
        conn.execute("INSERT INTO events (ts, kind, message, level, host_id, data) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (t0 + dt, kind, kind, level, host_id,
                      json.dumps(data) if data else None))
    ev(0, "boot.dhcp", data={"arch": firmware_arch})
    ev(2, "boot.tftp")
    ev(3, "boot.dhcp", data={"arch": firmware_arch})  # iPXE asks again: the same boot
    ev(4, "boot.script")
    if kernel_missing:
        ev(5, "boot.kernel", "error", {"status": "missing"})
        return
    ev(5, "boot.kernel", data={"status": "started"})
    ev(6, "boot.kernel", data={"status": "completed"})
    ev(9, "boot.initrd", data={"status": "completed"})
    ev(40, "host.booted")


def test_metrics_parse_and_carry_the_services_counters(web):
    app, store, _ = web
    r = scrape(app)
    assert r.status_code == 200 and r.content_type.startswith("text/plain; version=0.0.4")
    s = samples(r.data.decode())
    assert s[("nixie_dhcp_received_messages_total", (("type", "discover"),))] == 7
    assert s[("nixie_dhcp_naks_total", ())] == 1
    assert s[("nixie_dhcp_declines_total", ())] == 1
    assert s[("nixie_dhcp_pool_size", ())] == 100 and s[("nixie_dhcp_pool_bound", ())] == 4
    assert s[("nixie_tftp_transfers_total", (("result", "completed"),))] == 2
    assert s[("nixie_tftp_sent_bytes_total", ())] == 12345
    assert s[("nixie_httpboot_responses_total", (("code", "404"), ("route", "kernel")))] == 1
    assert s[("nixie_httpboot_sent_bytes_total", (("file", "kernel"),))] == 999
    assert s[("nixie_dns_answers_total", (("result", "cache_hits"),))] == 4
    assert s[("nixie_dns_upstream_errors_total", (("kind", "timeouts"),))] == 1
    assert s[("nixie_dns_upstream_seconds_count", ())] == 4
    assert s[("nixie_dns_upstream_seconds_sum", ())] == 0.25
    assert s[("nixie_service_up", (("service", "dns"),))] == 0
    assert not any(k[0].startswith("nixie_dhcp6") for k in s)  # off: nothing exported


def test_boot_histograms_by_firmware_from_the_event_log(web):
    app, store, _ = web
    c = store.conn()
    a = hosts.add_host(c, "a", ["52:54:00:00:00:01"], "github:o/r", "a")
    b = hosts.add_host(c, "b", ["52:54:00:00:00:02"], "github:o/r", "a")
    t0 = time.time() - 3600
    _boot(c, a["id"], t0, firmware_arch=0)
    _boot(c, b["id"], t0 + 100, firmware_arch=7)
    _boot(c, b["id"], t0 + 200, firmware_arch=7, kernel_missing=True)
    c.commit()
    s = samples(scrape(app).data.decode())
    for fw in ("bios", "uefi"):
        assert s[("nixie_boot_duration_seconds_count", (("firmware", fw),))] == 1
        assert s[("nixie_boot_duration_seconds_sum", (("firmware", fw),))] == pytest.approx(40)
        assert s[("nixie_boot_step_seconds_count", (("firmware", fw), ("step", "tftp")))] >= 1
    assert s[("nixie_boots_total", (("firmware", "uefi"), ("outcome", "stopped")))] == 1
    assert s[("nixie_agent_reports_total", (("report", "booted"),))] == 2
    # the initrd step took 3 s: it is in the 5 s bucket and not in the 2 s one
    key = (("firmware", "bios"), ("le", "2.0"), ("step", "initrd"))
    assert s[("nixie_boot_step_seconds_bucket", key)] == 0
    key = (("firmware", "bios"), ("le", "5.0"), ("step", "initrd"))
    assert s[("nixie_boot_step_seconds_bucket", key)] == 1


def test_from_a_non_lan_address_refused(web):
    app, _, _ = web
    for addr in ("203.0.113.9", "10.99.0.1", "::ffff:198.51.100.1", "not-an-ip", ""):
        r = scrape(app, addr)
        assert r.status_code == 403, addr
        assert b"nixie_" not in r.data
    assert scrape(app, "::ffff:127.0.0.1").status_code == 200


def test_the_lan_ipv6_prefix_may_scrape_also_when_it_is_the_generated_ula(web):
    """lan.address6 null (the default): the LAN's prefix is the ULA made at first start;
    a LAN client over IPv6 may scrape, another IPv6 network may not."""
    app, store, _ = web
    ula = ipaddress.IPv6Interface(lan_address6(store.conn(), None)).network  # made, stored
    assert scrape(app, str(ula.network_address + 0x50)).status_code == 200
    assert scrape(app, "fd00:dead:beef::50").status_code == 403


def test_forged_forwarded_for_and_a_refused_flood_render_nothing(tmp_path):
    """X-Forwarded-For / X-Real-IP naming loopback do not admit an outside source, and a
    flood of refused scrapes never reads the health report nor renders."""
    reads = []
    app, store, _ = make_app(tmp_path / "s", lambda: reads.append(1) or HEALTH)
    for _ in range(200):
        r = scrape(app, "203.0.113.9", **{"X-Forwarded-For": "127.0.0.1",
                                          "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"})
        assert r.status_code == 403 and b"nixie_" not in r.data
    assert reads == []
    s = samples(scrape(app).data.decode())
    assert s[("nixie_metrics_renders_total", ())] == 1 and reads == [1]
    store.close()


def test_allow_lists_extra_networks(tmp_path):
    app, store, _ = make_app(tmp_path / "s", lambda: HEALTH,
                             sections={"metrics": {"allow": ["203.0.113.0/24"]}})
    assert scrape(app, "203.0.113.9").status_code == 200
    assert scrape(app, "203.0.114.9").status_code == 403
    store.close()


def test_token_wrong_or_missing_is_401(tmp_path):
    tok = tmp_path / "metrics-token"
    tok.write_text("s3cret-token-value\n")
    app, store, _ = make_app(tmp_path / "s", lambda: HEALTH,
                             sections={"metrics": {"token_file": str(tok)}})
    assert scrape(app).status_code == 401
    r = scrape(app, Authorization="Bearer wrong")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"nixie_" not in r.data
    r = scrape(app, Authorization="Bearer s3cret-token-value")
    assert r.status_code == 200 and b"nixie_dhcp_pool_size" in r.data
    # a non-LAN source with the right token: still refused
    assert scrape(app, "203.0.113.9", Authorization="Bearer s3cret-token-value").status_code == 403
    tok.write_text("")
    assert scrape(app, Authorization="Bearer s3cret-token-value").status_code == 503
    store.close()


def test_disabled_is_404(tmp_path):
    app, store, _ = make_app(tmp_path / "s", lambda: HEALTH, sections={"metrics": {"enable": False}})
    assert scrape(app).status_code == 404
    store.close()


def test_scrape_flood_is_bounded_to_a_rendering_a_second(web, monkeypatch):
    """300 scrapes over 3 s of the cache's clock (stepped by the test, not the wall clock
    of a busy machine): a rendering at 0, 1 and 2 s, and one for the scrape at 3 s that
    reads the count."""
    app, _, _ = web
    clock = [0.0]
    monkeypatch.setattr(fragments, "time",
                        SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    for i in range(300):
        clock[0] = i / 100
        assert scrape(app).status_code == 200
    clock[0] = 3.0
    renders = samples(scrape(app).data.decode())[("nixie_metrics_renders_total", ())]
    assert renders == 3 / fragments.FRESH_SECONDS + 1


def test_web_request_latency_histogram(web):
    app, _, _ = web
    assert app.test_client().get("/login").status_code == 302  # before setup: to the wizard
    s = samples(scrape(app).data.decode())
    assert s[("nixie_web_request_seconds_count", (("area", "auth"), ("code", "3xx")))] == 1


# ------------------------------------------------------------------ boots from events

def _rows(spec):
    return [{"ts": ts, "kind": kind, "level": level, "message": kind, "host_id": 1,
             "host": "h", "data": data} for ts, kind, level, data in spec]


@pytest.mark.parametrize("spec, outcome, stopped_at, hint", [
    ([(0, "boot.dhcp", "info", {"arch": 7}), (1, "boot.tftp", "info", None)],
     "stopped", "tftp", "stopped after TFTP: the firmware could not load iPXE"),
    ([(0, "boot.dhcp", "info", {"arch": 0})], "stopped", "dhcp", "stopped after DHCP"),
    ([(0, "boot.dhcp", "info", {"arch": 0}), (1, "boot.script", "info", None),
      (2, "boot.kernel", "error", {"status": "missing"})],
     "stopped", "kernel", "the kernel is missing"),
    ([(0, "boot.dhcp", "info", {"arch": 0}), (1, "boot.script", "info", None),
      (2, "boot.kernel", "info", None), (3, "boot.initrd", "info", None)],
     "stopped", "initrd", "stopped after the initrd"),
    ([(0, "boot.dhcp", "info", {"arch": 0}), (1, "boot.script", "info", None),
      (2, "host.failed", "error", None)], "failed", "failed", "the agent reported"),
    ([(0, "boot.dhcp", "info", {"arch": 0}), (30, "host.booted", "info", None)],
     "booted", "booted", None),
])
def test_where_a_boot_stopped_and_why(spec, outcome, stopped_at, hint):
    later = 10_000  # long after: a quiet boot has stopped
    [b] = boots.from_events(_rows(spec), now=later)
    assert b.outcome == outcome and b.last.name == stopped_at
    if hint:
        assert b.hint.startswith(hint) and b.section
    else:
        assert b.hint is None and b.seconds == 30


def test_a_boot_still_running_has_no_hint_and_steps_have_durations():
    spec = [(100, "boot.dhcp", "info", {"arch": 7}), (102.5, "boot.tftp", "info", None),
            (103, "boot.dhcp", "info", {"arch": 7}), (104, "boot.script", "info", None)]
    [b] = boots.from_events(_rows(spec), now=110)
    assert b.outcome == "running" and b.hint is None and b.firmware == "uefi"
    assert [(s.name, s.seconds) for s in b.steps] == [("dhcp", None), ("tftp", 2.5),
                                                      ("script", 1.5)]


def test_a_new_dhcp_after_the_kernel_is_a_new_boot():
    spec = [(0, "boot.dhcp", "info", {"arch": 0}), (1, "boot.script", "info", None),
            (2, "boot.kernel", "info", None), (50, "boot.dhcp", "info", {"arch": 0}),
            (60, "host.booted", "info", None)]
    first, second = boots.from_events(_rows(spec), now=70)
    assert first.outcome == "stopped" and first.hint.startswith("stopped after the kernel")
    assert second.outcome == "booted" and second.seconds == 10


def test_events_recorded_by_the_domain_read_back(web):
    _, store, _ = web
    c = store.conn()
    h = hosts.add_host(c, "x", ["52:54:00:00:00:09"], "github:o/r", "a")
    # boot.* events are anonymous traffic, budgeted per minute (other tests spend it)
    c.execute("INSERT INTO events (ts, kind, message, host_id, data) VALUES (?, 'boot.dhcp', "
              "'answer', ?, '{\"arch\": 0}')", (time.time() - 5, h["id"]))
    events.record(c, "host.booted", "up", host_id=h["id"])
    [b] = boots.of_host(c, h["id"], time.time())
    assert b.outcome == "booted" and b.firmware == "bios" and b.host == "x"


# ------------------------------------------------------------------ the pictures

def _bars(html: str, chart_id: str) -> list[float]:
    i = html.index(f'id="{chart_id}"')
    fig = html[i:html.index("</figure>", i)]
    return [float(v) for v in re.findall(r'data-value="([0-9.]+)"', fig)]


def test_dashboard_charts_carry_the_boots_builds_and_pool(tmp_path):
    app, store, _ = make_app(tmp_path / "state", lambda: HEALTH)
    client = logged_in_client(app)
    c = store.conn()
    a = hosts.add_host(c, "a", ["52:54:00:00:00:01"], "github:o/r", "a")
    _boot(c, a["id"], time.time() - 3 * 3600, firmware_arch=0)
    _boot(c, a["id"], time.time() - 600, firmware_arch=7, kernel_missing=True)
    b = builds.enqueue(c, "a")
    c.execute("UPDATE builds SET status = 'succeeded', started_at = ?, finished_at = ? "
              "WHERE id = ?", (time.time() - 100, time.time() - 25, b["id"]))
    c.execute("INSERT INTO leases (ip, mac, state, starts, expires, updated_at) VALUES "
              "('127.0.0.100', '52:54:00:00:00:01', 'bound', ?, ?, ?)",
              (time.time(), time.time() + 600, time.time()))
    c.commit()
    html = client.get("/").data.decode()
    assert sum(_bars(html, "chart-boots-per-hour")) == 2
    assert _bars(html, "chart-boot-durations") == [40, 5]  # booted in 40 s; stopped after 5 s
    assert _bars(html, "chart-lease-pool") == [1]
    assert "1 of 100 (1%)" in html
    assert _bars(html, "chart-build-durations") == [pytest.approx(75)]
    assert "<script" not in html[html.index('id="charts"'):html.index("</section>",
                                                                      html.index('id="charts"'))]
    store.close()


def test_host_timeline_shows_step_durations_and_where_a_boot_stopped(tmp_path):
    app, store, _ = make_app(tmp_path / "state", lambda: HEALTH)
    client = logged_in_client(app)
    c = store.conn()
    a = hosts.add_host(c, "a", ["52:54:00:00:00:01"], "github:o/r", "a")
    _boot(c, a["id"], time.time() - 3600)
    _boot(c, a["id"], time.time() - 600, kernel_missing=True)
    c.commit()
    html = client.get("/hosts/a").data.decode()
    assert 'data-outcome="stopped"' in html and 'data-outcome="booted"' in html
    assert "Stopped at <strong>kernel</strong>: the kernel is missing" in html
    assert "docs/troubleshooting.md#kernel-and-initrd" in html
    assert "initrd <span class=\"muted\">+3.0 s</span>" in html
    assert "power-on to booted 40 s" in html
    store.close()


def test_hint_sections_exist_in_the_troubleshooting_doc():
    doc = (Path(__file__).parents[2] / boots.TROUBLESHOOTING).read_text()
    heads = {boots.anchor(line[3:].strip()) for line in doc.splitlines() if line.startswith("## ")}
    for _hint, section in [*boots.HINTS.values(), *boots.MISSING_HINTS.values()]:
        assert boots.anchor(section) in heads, section


def test_a_boot_may_start_at_the_script():
    spec = [(0, "boot.script", "info", None), (1, "boot.kernel", "info", None),
            (2, "boot.initrd", "info", None), (9, "host.booted", "info", None),
            (20, "boot.script", "info", None)]
    first, second = boots.from_events(_rows(spec), now=25)
    assert first.outcome == "booted" and first.seconds == 9 and first.firmware is None
    assert second.outcome == "running"
