"""`nixie serve` with the real TFTP and HTTP boot services, clients in another namespace."""

from __future__ import annotations

import hashlib
import json
import time

from appliance.config.schema import example_config
from appliance.state import db
from lab.netns import Netns, bridge, bridge_port, start_serve, stop_processes, wait_port
from tests.conftest import run_nixie


def test_serve_runs_tftp_and_httpboot(tmp_path):
    tmp_path.chmod(0o755)
    srv, cli = Netns(), Netns()
    proc = None
    try:
        bridge(srv, "br-lan", "10.77.0.1/24")
        bridge_port(srv, "br-lan", "lan0", cli, address="10.77.0.50/24")
        cfg = example_config(state_dir=str(tmp_path / "state"), interface="br-lan")
        cfg["dhcp"]["mode"] = "off"
        cfg["dns"]["enable"] = False
        cfg["boot"]["menu"] = False
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        assert run_nixie("host", "add", "n1", "--mac", "52:54:00:00:00:77", "--flake",
                         "github:me/infra", config=path).returncode == 0
        # the client holds a lease, as DHCP would have given it: TFTP events name the host
        conn = db.connect(tmp_path / "state" / "nixie.db")
        conn.execute("INSERT INTO leases (ip, mac, state, starts, expires, updated_at) "
                     "VALUES ('10.77.0.50', '52:54:00:00:00:77', 'bound', 0, 9e9, 0)")
        conn.close()
        proc = start_serve(srv, path, tmp_path / "serve.log")
        assert wait_port(srv, "10.77.0.1", 8081, timeout=20), (tmp_path / "serve.log").read_text()
        # TFTP: the root was populated with copies of the iPXE binaries
        out = tmp_path / "ipxe.efi"
        for _ in range(50):
            r = cli.run("curl", "-sS", "--tftp-blksize", "1468", "-o", str(out),
                        "tftp://10.77.0.1/ipxe.efi", check=False)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(
            open("/usr/lib/ipxe/ipxe.efi", "rb").read()).digest()
        # HTTP boot: a host with nothing built yet gets a retry script, never an error
        r = cli.run("curl", "-sS", "-w", "\n%{http_code}", "http://10.77.0.1:8081/boot/52-54-00-00-00-77.ipxe")
        body, _, code = r.stdout.rpartition("\n")
        assert code == "200" and "#!ipxe" in body and "sleep" in body
        assert "chain --replace --autofree http://10.77.0.1:8081/boot/52:54:00:00:00:77.ipxe" in body
        # the agent API answers on the same listener
        r = cli.run("curl", "-sS", "-w", "\n%{http_code}", "-H", "Authorization: Bearer nope",
                    "-d", '{"event": "booted"}', "http://10.77.0.1:8081/api/v1/agent/events")
        assert r.stdout.rsplit("\n", 1)[1] == "401"
        for _ in range(20):  # the TFTP event is recorded off the packet path
            ev = json.loads(run_nixie("events", "--json", "--limit", "50", config=path).stdout)
            kinds = {e["kind"] for e in ev}
            if "boot.tftp" in kinds:
                break
            time.sleep(0.25)
        assert {"boot.tftp", "boot.script", "agent.rejected"} <= kinds, kinds
        tftp = next(e for e in ev if e["kind"] == "boot.tftp")
        assert tftp["host"] == "n1" and tftp["ip"] == "10.77.0.50", tftp
    finally:
        if proc is not None:
            stop_processes([proc], timeout=10)
        srv.close()
        cli.close()
