"""nixie-agent against the real router: `nixie serve`'s HTTP boot listener in one namespace,
the agent (busybox sh + busybox wget) in a client namespace on its LAN, a per-boot token
issued by the appliance. The host moves to `booted` with the client's address.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config.schema import example_config
from appliance.domain.agent import issue_token
from appliance.nix import install
from appliance.state.db import Store
from lab.netns import Netns, bridge, bridge_port, serving, stop_processes, wait_port
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


def run_agent(client, tmp_path, token, *args, env=()):
    bindir = busybox_bin(tmp_path / "bb")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"init=/nix/store/x/init nixie.api=http://10.77.0.1:8081 nixie.token={token}\n")
    env = [f"PATH={bindir}", f"NIXIE_CMDLINE={cmdline}", "NIXIE_AGENT_ATTEMPTS=3",
           "NIXIE_AGENT_BACKOFF=1", f"TMPDIR={tmp_path}", *env]
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


def _sshd(client, tmp_path, host_key):
    """A real sshd on the client's address, with `host_key`, letting in the router's
    identity (install.ssh_key_file) as root."""
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    return client.popen("/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-o", f"HostKey={host_key}",
                        "-o", f"ListenAddress={CLIENT_IP}:22", "-o", "PidFile=none",
                        "-o", f"AuthorizedKeysFile={tmp_path / 'authorized_keys'}",
                        "-o", "StrictModes=no", "-o", "UsePAM=no",
                        "-o", "PermitRootLogin=prohibit-password",
                        stdout=open(tmp_path / "sshd.log", "a"), stderr=subprocess.STDOUT)


def test_the_agents_host_key_is_pinned_and_the_push_ssh_trusts_only_it(router_and_client,
                                                                        tmp_path):
    """The real agent sends the host's key with its report; the router pins it; the SSH
    options nixos-anywhere gets (`--ssh-option`s and `-i` of `nixie host install NAME
    --push --dry-run`) let the real ssh into the real sshd holding that key, and refuse
    an sshd with any other key (what a machine that took the host's address would
    have). nixos-anywhere itself exists only on NixOS: its argv is a golden file
    (tests/unit/test_push_install.py)."""
    router, client, path = router_and_client
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("host", "impostor"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
                        "-f", str(keys / name)], check=True)
    assert run_nixie("host", "add", "node2", "--mac", "bc:24:11:00:09:02", "--flake",
                     "github:me/infra", config=path, ns=router).returncode == 0
    store = Store(tmp_path / "state" / "nixie.db")
    conn = store.conn()
    host_id = conn.execute("SELECT id FROM hosts WHERE name = 'node2'").fetchone()[0]
    conn.execute("INSERT INTO generations (host_id, number, toplevel, created_at) "
                 "VALUES (?, 1, '/nix/store/aaaa-nixos-system-node2', 0)", (host_id,))
    token = issue_token(conn, host_id, None, client_ip=CLIENT_IP, purpose="netboot")
    store.close()
    ident = install.ssh_key_file(tmp_path / "state")
    ident.parent.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ident)], check=True)
    (tmp_path / "authorized_keys").write_text(Path(f"{ident}.pub").read_text())

    ok = run_agent(client, tmp_path, token, "booted", env=[
        f"NIXIE_SSH_HOST_KEY_FILE={keys / 'host.pub'}"])
    assert ok.returncode == 0, ok.stderr
    shown = json.loads(run_nixie("host", "show", "node2", "--json", config=path, ns=router).stdout)
    host_pub = (keys / "host.pub").read_text().split()
    assert shown["ssh_host_key"] == " ".join(host_pub[:2]), shown

    r = run_nixie("host", "install", "node2", "--push", "--dry-run", "--json", config=path,
                  ns=router)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    argv = plan["argv"]
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "--ssh-option"]
    known = next(o.split("=", 1)[1] for o in opts if o.startswith("UserKnownHostsFile="))
    Path(known).write_text(plan["known_hosts"])
    ssh = ["ssh", "-i", argv[argv.index("-i") + 1], *[x for o in opts for x in ("-o", o)],
           "-o", "ConnectTimeout=10", argv[argv.index("--target-host") + 1], "echo", "reached"]

    def attempt(host_key: Path) -> subprocess.CompletedProcess:
        sshd = _sshd(client, tmp_path, host_key)
        try:
            assert wait_port(client, CLIENT_IP, 22), (tmp_path / "sshd.log").read_text()
            return subprocess.run(router.argv(*ssh), capture_output=True, text=True, timeout=60)
        finally:
            stop_processes([sshd])

    good = attempt(keys / "host")
    assert good.returncode == 0 and good.stdout.strip() == "reached", good.stderr
    bad = attempt(keys / "impostor")
    assert bad.returncode != 0 and "reached" not in bad.stdout
    assert "Host key verification failed" in bad.stderr, bad.stderr
