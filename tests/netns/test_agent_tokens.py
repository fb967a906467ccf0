"""Agent tokens against the real `nixie serve` (issue 15, finding 1): the attacks a LAN
client can make with the unauthenticated boot script, each seen to fail.

The router (HTTP boot on 10.77.0.1:8081) serves a host with two generations built by its
own build worker with the real `nix`; the host holds a DHCP lease on 10.77.0.50 (written
as the DHCP server would), an attacker sits on 10.77.0.66 of the same LAN.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
import uuid

import pytest

from appliance.config.schema import load_config
from appliance.domain import builds, hosts
from appliance.nix.buildworker import BuildWorker, claim_next
from appliance.state.db import Store
from lab import flake as labflake
from lab.netns import Netns, bridge, bridge_port, serving
from tests.agent_recorder import AGENT, busybox_bin
from tests.conftest import run_nixie
from tests.nixlab import lab_config

MAC = "52:54:00:5e:00:31"
HOST_IP, ATTACKER_IP = "10.77.0.50", "10.77.0.66"
BOOT = "http://10.77.0.1:8081"
SCRIPT = f"{BOOT}/boot/{MAC}.ipxe"
EVENTS = f"{BOOT}/api/v1/agent/events"


@pytest.fixture
def lan(tmp_path):
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed")
    tmp_path.chmod(0o755)
    path, _ = lab_config(tmp_path)
    raw = json.loads(path.read_text())
    raw["boot"].update({"menu": True, "menu_timeout_seconds": 5, "token_used_seconds": 10})
    raw["lan"]["address"] = "10.77.0.1/24"
    path.write_text(json.dumps(raw))
    cfg = load_config(path)
    flake_dir = labflake.materialise(tmp_path / "flake", release=f"tokens {uuid.uuid4()}")
    store = Store(cfg.db_path)
    conn = store.conn()
    hosts.add_host(conn, "node1", [MAC], str(flake_dir), "nixosConfigurations.demo", "netboot")
    worker = BuildWorker(cfg, store)
    worker.log_dir.mkdir(parents=True, exist_ok=True)
    worker.root_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # two generations: the menu lists both, one token each
        b = builds.enqueue(conn, "node1")
        worker.build_one(conn, claim_next(conn))
        assert builds.get_build(conn, b["id"])["status"] == "succeeded"
    conn.execute("INSERT INTO leases (ip, mac, state, starts, expires, updated_at) "
                 "VALUES (?, ?, 'bound', 0, 9e9, 0)", (HOST_IP, MAC))
    store.close()
    with Netns() as router, Netns() as host, Netns() as attacker:
        bridge(router, "br-lan", "10.77.0.1/24")
        bridge_port(router, "br-lan", "lan0", host, address=f"{HOST_IP}/24")
        bridge_port(router, "br-lan", "lan1", attacker, address=f"{ATTACKER_IP}/24")
        with serving(router, path, tmp_path / "serve.log", [("10.77.0.1", 8081)], timeout=30):
            yield router, host, attacker, path, cfg


def fetch_script(ns) -> str:
    """The host's script once its initrds are built (a retry script until then)."""
    deadline = time.monotonic() + 300
    while True:
        text = ns.run("curl", "-sf", SCRIPT).stdout
        if "nixie.token=" in text:
            return text
        assert time.monotonic() < deadline, text
        time.sleep(1)


def tokens_in(script: str) -> list[str]:
    return re.findall(r"nixie\.token=([A-Za-z0-9_-]+)", script)


def post(ns, token: str, event: str) -> int:
    r = ns.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
               f"Authorization: Bearer {token}", "-d", json.dumps({"event": event}), EVENTS)
    return int(r.stdout)


def host_state(path) -> dict:
    return json.loads(run_nixie("host", "show", "node1", "--json", config=path).stdout)


def run_agent(ns, tmp_path, token, *args):
    bindir = busybox_bin(tmp_path / "bb")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"init=/nix/store/x/init nixie.api={BOOT} nixie.token={token}\n")
    env = [f"PATH={bindir}", f"NIXIE_CMDLINE={cmdline}", "NIXIE_AGENT_ATTEMPTS=1",
           f"TMPDIR={tmp_path}"]
    return subprocess.run(ns.argv("env", "-i", *env, shutil.which("busybox"), "sh", str(AGENT),
                                  *args), capture_output=True, text=True, timeout=120)


def token_rows(cfg) -> list[tuple]:
    conn = sqlite3.connect(cfg.db_path)
    try:
        return conn.execute("SELECT host_id, generation_id, client_ip FROM boot_tokens "
                            "ORDER BY generation_id").fetchall()
    finally:
        conn.close()


def test_a_lan_client_cannot_use_the_boot_script_to_move_a_host(lan, tmp_path):
    router, host, attacker, path, cfg = lan
    first = tokens_in(fetch_script(host))
    assert len(first) == 2  # the menu: one per generation

    # the attacker fetches the same script: no token in it, and the host's are kept
    stolen = attacker.run("curl", "-sf", SCRIPT).stdout
    assert "#!ipxe" in stolen and tokens_in(stolen) == []
    # ... and replays the host's token (say it sniffed it) from its own address
    for event in ("booted", "failed"):
        assert post(attacker, first[0], event) == 403
    shown = host_state(path)
    assert shown["state"] == "unknown" and shown["ip"] != ATTACKER_IP

    # 1 000 fetches by the host: at most one outstanding token per host and generation
    fetches = [x for _ in range(1000) for x in (SCRIPT, "-o", "/dev/null")]
    assert host.run("curl", "-sf", *fetches).returncode == 0
    rows = token_rows(cfg)
    assert len(rows) == 2 and len({r[1] for r in rows}) == 2, rows
    assert {r[2] for r in rows} == {HOST_IP}
    # the replaced tokens are dead
    assert post(host, first[0], "booted") == 401

    last = tokens_in(fetch_script(host))
    assert len(last) == 2
    ok = run_agent(host, tmp_path, last[0], "booted", "generation 2")
    assert ok.returncode == 0, ok.stderr
    shown = host_state(path)
    assert shown["state"] == "booted" and shown["ip"] == HOST_IP

    # backwards along the state machine with the same boot's token: refused
    assert post(host, last[0], "installing") == 409
    assert host_state(path)["state"] == "booted"
    # a used token dies soon (boot.token_used_seconds = 10): a replay later is refused
    time.sleep(11)
    assert post(host, last[0], "failed") == 401
    assert post(host, last[0], "booted") == 401
    assert host_state(path)["state"] == "booted"
