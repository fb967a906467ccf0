"""Stateless mode exits non-zero with a reason when it cannot finish."""

import json
import time

from lab.netns import Netns, bridge, serve_argv


def test_stateless_times_out_with_reason(tmp_path):
    hosts_json = tmp_path / "hosts.json"
    hosts_json.write_text(json.dumps({"machine1": {"mac_address": "bc:24:11:d0:28:34"}}))
    from appliance.config.schema import example_config

    cfg = example_config(state_dir=str(tmp_path / "unused"))
    cfg["dns"]["enable"] = False
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    with Netns() as ns:
        bridge(ns, "br-lan", "10.77.0.1/24")
        t0 = time.monotonic()
        r = ns.run(*serve_argv(cfg_path, "--hosts", str(hosts_json), "--flake", "path:/nonexistent",
                               "--timeout", "3", "--state-dir", str(tmp_path / "state")),
                   check=False, timeout=60)
        assert time.monotonic() - t0 < 60
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "machine1" in last and ("timed out" in last or "failed" in last), last
    # the run was stateless: proxy DHCP, and the host was imported and woken
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state" / "nixie.db")
    kinds = [k for (k,) in conn.execute("SELECT kind FROM events")]
    assert "hosts.imported" in kinds and "host.wol" in kinds and "build.queued" in kinds
    assert not (tmp_path / "unused").exists()
