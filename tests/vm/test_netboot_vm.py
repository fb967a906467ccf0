"""A QEMU VM netboots a generation built by the real nix from the lab flake:
SeaBIOS -> the NIC's iPXE ROM -> dnsmasq DHCP (+TFTP for non-iPXE clients) ->
an iPXE script naming the toplevel -> kernel + our initrd (stage-1 initrd
followed by one zstd CPIO per closure path) -> stage 1 -> stage 2 from
/nix/store in the initramfs -> DHCP -> report with the per-boot token.

The HTTP side is a tiny server of this test that streams our Artifacts; the
real HTTP boot server (another room) replaces it at merge.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from appliance import agent, builds, hosts, labflake
from appliance.bootartifacts import StoreBootArtifacts
from appliance.buildworker import BuildWorker, claim_next
from appliance.db import Store
from appliance.netlab import Netns, bridge, wait_port
from netservices.backend import HostRecord
from tests.nixlab import lab_config

HERE = Path(__file__).resolve().parent
MAC = "52:54:00:5e:00:01"
BOOT_TIMEOUT = 240


def test_vm_boots_a_built_generation_to_stage2_and_reports(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"vm-test {uuid.uuid4()}")
    _cfg_path, cfg = lab_config(tmp_path)
    store = Store(cfg.db_path)
    conn = store.conn()
    hosts.add_host(conn, "demo", [MAC], str(flake), None, "netboot")
    worker = BuildWorker(cfg, store)
    worker.log_dir.mkdir(parents=True)
    worker.root_dir.mkdir(parents=True)
    b = builds.enqueue(conn, "demo")
    worker.build_one(conn, claim_next(conn))
    b = builds.get_build(conn, b["id"])
    assert b["status"] == "succeeded", b["error"]

    ba = StoreBootArtifacts(cfg, store)
    try:
        h = hosts.get_host(conn, "demo")
        record = HostRecord(name="demo", id=h["id"], macs=(MAC,), mode="netboot")
        target = ba.boot_targets(record)[0]
        token = ba.issue_boot_token(record, target)
        kernel, initrd = ba.artifact(target.toplevel, "kernel"), ba.artifact(target.toplevel, "initrd")
    finally:
        ba.close()

    api = "http://10.77.0.1:8081"
    top_id = os.path.basename(target.toplevel)[:32]
    cmdline = " ".join([f"init={target.toplevel}/init", *target.kernel_params, "initrd=initrd",
                        f"nixie.api={api}", f"nixie.token={token}"])
    script = (f"#!ipxe\nkernel {api}/boot/{top_id}/kernel {cmdline}\n"
              f"initrd --name initrd {api}/boot/{top_id}/initrd\nboot\n")
    spec = {"listen": ["10.77.0.1", 8081], "texts": {"/boot.ipxe": script},
            "artifacts": {f"/boot/{top_id}/{a.name}": [[s.path, s.offset, s.length]
                                                        for s in a.segments]
                          for a in (kernel, initrd)},
            "reports": str(tmp_path / "reports.jsonl")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    shutil.copy("/usr/lib/ipxe/undionly.kpxe", tftp)
    os.chmod(tmp_path, 0o755)
    os.chmod(tftp, 0o755)

    procs: list[subprocess.Popen] = []
    console = tmp_path / "console.log"
    with Netns() as ns:
        try:
            bridge(ns, "br0", "10.77.0.1/24")
            tap = "tapvm0"
            ns.run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
            ns.run("ip", "link", "set", tap, "master", "br0")
            ns.run("ip", "link", "set", tap, "up")
            procs.append(ns.popen(sys.executable, str(HERE / "artifact_server.py"),
                                  str(tmp_path / "spec.json"),
                                  stdout=open(tmp_path / "http.log", "w"),
                                  stderr=subprocess.STDOUT))
            procs.append(ns.popen(
                "dnsmasq", "--keep-in-foreground", "--no-daemon", "--port=0", "--bind-interfaces",
                "--interface=br0", "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h",
                "--dhcp-userclass=set:ipxe,iPXE", f"--dhcp-boot=tag:ipxe,{api}/boot.ipxe",
                "--dhcp-boot=tag:!ipxe,undionly.kpxe", "--enable-tftp", f"--tftp-root={tftp}",
                f"--dhcp-leasefile={tmp_path / 'leases'}", "--log-dhcp", "--user=root",
                stdout=open(tmp_path / "dnsmasq.log", "w"), stderr=subprocess.STDOUT))
            assert wait_port(ns, "10.77.0.1", 8081), (tmp_path / "http.log").read_text()
            vm = ns.popen("qemu-system-x86_64", "-accel", "tcg", "-m", "768", "-nographic",
                          "-no-reboot", "-boot", "n",
                          "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                          "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
                          stdout=open(console, "wb"), stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)
            procs.append(vm)
            deadline = time.monotonic() + BOOT_TIMEOUT
            text = ""
            while time.monotonic() < deadline and vm.poll() is None:
                text = console.read_bytes().decode(errors="replace")
                if "NIXIE-REPORTED" in text or "NIXIE-REPORT-FAILED" in text:
                    break
                time.sleep(1)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
    text = console.read_bytes().decode(errors="replace")
    tail = text[-3000:]
    assert "NIXIE-STAGE1" in text, tail
    assert "NIXIE-STAGE2 demo" in text, tail
    assert "NIXIE-REPORTED" in text, tail + (tmp_path / "http.log").read_text()[-2000:]
    reports = [json.loads(x) for x in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert reports[0]["path"] == "/api/v1/agent/events"
    assert reports[0]["auth"] == f"Bearer {token}"
    body = json.loads(reports[0]["body"])
    assert body["event"] == "booted" and target.toplevel in body["message"]
    assert reports[0]["ip"].startswith("10.77.0.1")  # a lease from dnsmasq's range
    info = agent.verify_token(conn, token)
    assert info.host_name == "demo" and info.generation_id == target.generation_id
    http_log = (tmp_path / "http.log").read_text()
    assert f"/boot/{top_id}/initrd" in http_log and f"/boot/{top_id}/kernel" in http_log
