"""`/metrics` around a real VM boot (tests/vm/test_e2e_boot.py calls these, no VM of its
own): scraped from the LAN with the Prometheus parser before and after, the counters
must have moved by exactly the boot's traffic as the event log tells it, and the boot
duration histogram must hold one boot per firmware."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_nixie
from tests.https import GET_SNIPPET

HEARTBEAT_WAIT = 5.0  # web workers read the services' counters from serve's 2 s heartbeat


def scrape(ns, lan_ip: str) -> dict[tuple, float]:
    """Every sample of /metrics, scraped from inside the LAN: {(name, labels): value}."""
    r = ns.run(sys.executable, "-c", GET_SNIPPET, f"https://{lan_ip}:8080/metrics")
    status, _, body = r.stdout.partition("\n")
    assert status.strip() == "200", r.stdout[:500] + r.stderr[-500:]
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def boot_events(cfg_path: Path) -> list[dict]:
    r = run_nixie("events", "--kind", "boot.*", "--limit", "2000", "--json", config=cfg_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_boot_metrics(ns, lan_ip: str, cfg_path: Path, before: dict[tuple, float],
                       firmwares: list[str]) -> dict[tuple, float]:
    """After the boots of `firmwares` (one VM each), with `before` scraped before they
    powered on. Returns the samples after."""
    time.sleep(HEARTBEAT_WAIT)
    after = scrape(ns, lan_ip)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    evs = boot_events(cfg_path)  # the appliance was fresh: every boot event is these boots'
    # one boot per firmware in the power-on -> booted histogram
    for fw in firmwares:
        assert total(before, "nixie_boot_duration_seconds_count", firmware=fw) == 0
        assert total(after, "nixie_boot_duration_seconds_count", firmware=fw) == 1, fw
        secs = total(after, "nixie_boot_duration_seconds_sum", firmware=fw)
        assert 0 < secs < 3600, (fw, secs)
        print(f"/metrics: {fw} booted in {secs:.1f} s (power-on to booted)")
    assert total(after, "nixie_boot_duration_seconds_count") == len(firmwares)
    # DHCP: one boot answer (OFFER or ACK with a boot file) per boot.dhcp event
    dhcp = sum(1 for e in evs if e["kind"] == "boot.dhcp")
    assert dhcp >= len(firmwares)
    answers = delta("nixie_dhcp_boot_answers_total") - delta("nixie_dhcp_boot_answers_total",
                                                              kind="none")
    assert answers == dhcp, (answers, dhcp, evs)
    assert delta("nixie_dhcp_sent_messages_total", type="ack") >= len(firmwares)
    # TFTP: a transfer per boot.tftp "sent" event, their bytes at least the files' sizes
    tftp = [e for e in evs if e["kind"] == "boot.tftp" and (e.get("data") or {}).get("status")
            == "sent"]
    assert delta("nixie_tftp_transfers_total", result="completed") == len(tftp), tftp
    assert delta("nixie_tftp_sent_bytes_total") >= sum(e["data"]["bytes"] for e in tftp)
    # HTTP boot: kernel and initrd transfers and bytes, as their "sent" events say
    for what in ("kernel", "initrd"):
        sent = [e for e in evs if e["kind"] == f"boot.{what}"
                and (e.get("data") or {}).get("status") == "completed"]
        assert len(sent) >= len(firmwares), what
        assert delta("nixie_httpboot_transfers_total", file=what, result="completed") \
            == len(sent), what
        assert delta("nixie_httpboot_sent_bytes_total", file=what) \
            == sum(e["data"]["bytes"] for e in sent), what
    scripts = Counter(e["kind"] for e in evs)["boot.script"]
    assert delta("nixie_httpboot_responses_total", route="script", code="200") >= scripts > 0
    print(f"/metrics deltas: {dhcp} DHCP boot answers, {len(tftp)} TFTP transfers "
          f"({delta('nixie_tftp_sent_bytes_total'):.0f} bytes), HTTP kernel "
          f"{delta('nixie_httpboot_sent_bytes_total', file='kernel'):.0f} and initrd "
          f"{delta('nixie_httpboot_sent_bytes_total', file='initrd'):.0f} bytes")
    return after
