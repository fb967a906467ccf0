"""`builder.kind = remote`: the build worker hands the build to an SSH Nix
builder through Nix's own remote building (`--builders ssh-ng://...`,
`--max-jobs 0`). The far side is sshd in a namespace whose forced command
runs Nix in a private mount namespace with its own, initially empty /nix:
its own store root. The result is copied back into the router's store."""

from __future__ import annotations

import os
import subprocess
import textwrap
import uuid
from pathlib import Path

from appliance.domain import builds, hosts
from appliance.nix.buildworker import BuildWorker, claim_next
from appliance.state.db import Store
from lab import flake as labflake
from lab.netns import Netns, unique, veth, wait_port
from tests.nixlab import NIX_EXTRA, lab_config


def start_builder(ns: Netns, tmp: Path, address: str) -> tuple[Path, str, Path]:
    ssh = tmp / "ssh"
    far = tmp / "far"
    (far / "nix").mkdir(parents=True)
    ssh.mkdir()
    for name in ("client", "hostkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / name)],
                       check=True)
    wrapper = ssh / "far-nix"
    nix_config = "experimental-features = nix-command\n" + NIX_EXTRA
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        # the builder's own store root: {far}/nix mounted on /nix, for this session only
        export NIX_CONFIG='{nix_config}'
        exec unshare -m --propagation private sh -c \\
          'mount --bind {far}/nix /nix && exec sh -c "$SSH_ORIGINAL_COMMAND"'
        """))
    wrapper.chmod(0o755)
    (ssh / "authorized_keys").write_text("restrict " + (ssh / "client.pub").read_text())
    (ssh / "sshd_config").write_text(textwrap.dedent(f"""\
        ListenAddress {address}:22
        HostKey {ssh}/hostkey
        AuthorizedKeysFile {ssh}/authorized_keys
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        StrictModes no
        UsePAM no
        ForceCommand {wrapper}
        PidFile none
        """))
    Path("/run/sshd").mkdir(exist_ok=True)
    ns.popen("/usr/sbin/sshd", "-D", "-e", "-f", str(ssh / "sshd_config"),
             stdout=open(tmp / "sshd.log", "w"), stderr=subprocess.STDOUT)
    host_key = " ".join((ssh / "hostkey.pub").read_text().split()[:2])
    return ssh / "client", host_key, far


def test_remote_builder_builds_and_result_is_copied_back(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"remote-test {uuid.uuid4()}")
    net = 20 + os.getpid() % 200
    router_ip, builder_ip = f"10.231.{net}.1", f"10.231.{net}.2"
    with Netns() as ns:
        host_if = unique("rb")
        veth(None, host_if, ns, "eth0")
        subprocess.run(["ip", "addr", "add", f"{router_ip}/30", "dev", host_if], check=True)
        ns.run("ip", "addr", "add", f"{builder_ip}/30", "dev", "eth0")
        key, host_key, far = start_builder(ns, tmp_path, builder_ip)
        assert wait_port(None, builder_ip, 22), (tmp_path / "sshd.log").read_text()

        _cfg_path, cfg = lab_config(tmp_path, kind="remote", uri=f"ssh-ng://root@{builder_ip}",
                                    ssh_key=str(key), host_key=host_key)
        store = Store(cfg.db_path)
        conn = store.conn()
        hosts.add_host(conn, "demo", ["52:54:00:5e:00:01"], str(flake), None, "netboot")
        worker = BuildWorker(cfg, store)
        worker.log_dir.mkdir(parents=True)
        worker.root_dir.mkdir(parents=True)
        b = builds.enqueue(conn, "demo")
        worker.build_one(conn, claim_next(conn))
        b = builds.get_build(conn, b["id"])
        sshd_log = (tmp_path / "sshd.log").read_text()
    assert b["status"] == "succeeded", f"{b['error']}\n{sshd_log}"
    top = b["toplevel"]
    base = os.path.basename(top)
    # built on the far side, in its own store ...
    assert (far / "nix" / "store" / base / "init").is_file()
    assert (far / "nix" / "var" / "nix" / "db" / "db.sqlite").is_file()
    # ... and copied back into ours
    assert os.path.isfile(f"{top}/init")
    log_text = Path(b["log_path"]).read_text()
    assert f"from 'ssh-ng://root@{builder_ip}'" in log_text, log_text
    assert "Accepted publickey for root" in sshd_log
    assert hosts.get_host(conn, "demo")["current_generation"] == 1
