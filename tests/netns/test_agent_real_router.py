"""nixie-agent against the real router: `nixie serve`'s HTTP boot listener in one namespace,
the agent (busybox sh + busybox wget) in a client namespace on its LAN, a per-boot token
issued by the appliance. The host moves to `booted` with the client's address.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from appliance.config.schema import example_config
from appliance.domain.agent import issue_token
from appliance.state.db import Store
from lab.netns import Netns, bridge, bridge_port, serving
from tests.agent_recorder import AGENT, busybox_bin
from tests.conftest import run_nixie

CLIENT_IP = "10.77.0.50"


@pytest.fixture
def router_and_client(tmp_path):
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed")
    cfg = example_config(state_dir=str(tmp_path / "state"), interface="br-lan")
    cfg["dhcp"]["mode"] = "off"
    cfg["dns"]["enable"] = False
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with Netns() as router, Netns() as client:
        bridge(router, "br-lan", "10.77.0.1/24")
        bridge_port(router, "br-lan", "lan0", client, address=f"{CLIENT_IP}/24")
        with serving(router, path, tmp_path / "serve.log", [("10.77.0.1", 8080), ("10.77.0.1", 8081)],
                     timeout=30):
            yield router, client, path


def run_agent(client, tmp_path, token, *args):
    bindir = busybox_bin(tmp_path / "bb")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"init=/nix/store/x/init nixie.api=http://10.77.0.1:8081 nixie.token={token}\n")
    env = [f"PATH={bindir}", f"NIXIE_CMDLINE={cmdline}", "NIXIE_AGENT_ATTEMPTS=3",
           "NIXIE_AGENT_BACKOFF=1", f"TMPDIR={tmp_path}"]
    return subprocess.run(client.argv("env", "-i", *env, shutil.which("busybox"), "sh", str(AGENT),
                                      *args), capture_output=True, text=True, timeout=120)


def test_agent_moves_the_host_to_booted_with_its_address(router_and_client, tmp_path):
    router, client, path = router_and_client
    r = run_nixie("host", "add", "node1", "--mac", "bc:24:11:00:09:01", "--flake", "github:me/infra",
                  config=path, ns=router)
    assert r.returncode == 0, r.stderr
    store = Store(tmp_path / "state" / "nixie.db")
    conn = store.conn()
    host_id = conn.execute("SELECT id FROM hosts WHERE name = 'node1'").fetchone()[0]
    token = issue_token(conn, host_id, None, client_ip=CLIENT_IP, purpose="netboot")
    store.close()

    bad = run_agent(client, tmp_path, "not-the-token", "booted")
    assert bad.returncode == 3 and "HTTP 401" in bad.stderr

    ok = run_agent(client, tmp_path, token, "booted", "generation 1")
    assert ok.returncode == 0, ok.stderr
    assert token not in ok.stdout + ok.stderr
    shown = json.loads(run_nixie("host", "show", "node1", "--json", config=path, ns=router).stdout)
    assert shown["state"] == "booted" and shown["ip"] == CLIENT_IP, shown
