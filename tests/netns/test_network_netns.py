"""Network transactions on real links, with a real `nixie serve` web listener on the LAN:
a bad address change rolls back by itself within its window and the admin UI is back;
a confirmed bridge over two ports stays; a change left pending by a process that died
is rolled back when serve starts again."""

import dataclasses
import json
import os
import signal
import subprocess
import time

import pytest

from appliance.config.schema import example_config
from appliance.router import network
from appliance.state.db import Store
from lab import netns as netlab
from lab.netns import Netns, stop_processes, veth, wait_port
from tests.conftest import run_nixie
from tests.netns.routerlab import RouterLab

ADMIN = ("10.77.0.1", 8080)


@pytest.fixture
def lab(tmp_path):
    nss, procs = [], []
    try:
        router, c1, c2 = Netns(), Netns(), Netns()
        nss += [router, c1, c2]
        veth(router, "lan0", c1, "eth0")
        veth(router, "lan1", c2, "eth0")
        router.run("ip", "link", "set", "lan1", "down")
        router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
        c1.run("ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
        c2.run("ip", "addr", "add", "10.77.0.51/24", "dev", "eth0")
        state = tmp_path / "state"
        cfg = example_config(state_dir=str(state), interface="lan0")
        cfg["dhcp"]["mode"] = "off"
        cfg["dns"]["enable"] = False
        cfg["firewall"] = {"enable": True}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))

        def start_serve():
            p = netlab.start_serve(router, path, tmp_path / "serve.log", mode="a")
            procs.append(p)
            assert wait_port(router, *ADMIN, timeout=20), (tmp_path / "serve.log").read_text()
            return p

        yield router, c1, c2, path, state, start_serve
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in nss:
            ns.close()


def up(ns, timeout=1.0):
    return RouterLab.http_status(ns, *ADMIN, timeout=timeout) is not None


def addrs(ns, dev):
    return ns.run("ip", "-4", "-o", "addr", "show", "dev", dev).stdout


def txn_row(state, txn_id):
    conn = Store(state / "nixie.db").conn()
    return conn.execute("SELECT * FROM net_transactions WHERE id = ?", (txn_id,)).fetchone()


def txn_state(state, txn_id):
    conn = Store(state / "nixie.db").conn()
    return conn.execute("SELECT state FROM net_transactions WHERE id = ?", (txn_id,)).fetchone()[0]


def test_rollback_confirm_and_crash_recovery(lab):
    router, c1, c2, cfg, state, start_serve = lab
    serve = start_serve()
    assert up(c1) and not up(c2)
    assert 'iifname "lan0" udp dport' in router.run("nft", "list", "table", "inet", "nixie").stdout

    # a bad change: the LAN address moves away; nobody confirms
    t0 = time.monotonic()
    # (onto a new bridge, so the firewall changes with it)
    r = run_nixie("net", "apply", "--lan-interface", "br-bad", "--lan-port", "lan0",
                  "--lan-address", "10.88.0.1/24", "--confirm-seconds", "8",
                  "--json", config=cfg, ns=router)
    assert r.returncode == 0, r.stderr
    txn = json.loads(r.stdout)
    assert "10.88.0.1/24" in addrs(router, "br-bad") and "10.77.0.1/24" not in addrs(router, "lan0")
    assert '"br-bad"' in router.run("nft", "list", "table", "inet", "nixie").stdout
    assert not up(c1)  # locked out
    while txn_state(state, txn["id"]) != "rolled_back" and time.monotonic() - t0 < 20:
        time.sleep(0.2)
    row = txn_row(state, txn["id"])
    assert row["state"] == "rolled_back", dict(row)
    # rolled back when its window closed (the watchdog polls every 0.2 s; slack for a busy box)
    assert row["deadline"] <= row["finished_at"] < row["deadline"] + 10, dict(row)
    assert up(c1, timeout=3), addrs(router, "lan0")
    assert "10.77.0.1/24" in addrs(router, "lan0") and "10.88.0.1" not in addrs(router, "lan0")
    assert txn_state(state, txn["id"]) == "rolled_back"
    assert router.run("ip", "link", "show", "br-bad", check=False).returncode != 0  # bridge gone
    rules = router.run("nft", "list", "table", "inet", "nixie").stdout
    assert '"br-bad"' not in rules and 'iifname "lan0" udp dport' in rules

    # a good change: bridge both LAN ports, confirmed, still there after its window
    r = run_nixie("net", "apply", "--lan-interface", "br-lan", "--lan-port", "lan0",
                  "--lan-port", "lan1", "--confirm-seconds", "12", "--json", config=cfg, ns=router)
    assert r.returncode == 0, r.stderr
    txn = json.loads(r.stdout)
    assert wait_port(c2, *ADMIN, timeout=5)
    r = run_nixie("net", "confirm", txn["id"], config=cfg, ns=router)
    assert r.returncode == 0, r.stderr
    time.sleep(max(0.0, txn["deadline"] + 1 - time.time()))  # past its window: it stays
    assert up(c1) and up(c2)
    assert "master br-lan" in router.run("ip", "link", "show", "lan1").stdout
    assert "10.77.0.1/24" in addrs(router, "br-lan")
    assert txn_state(state, txn["id"]) == "confirmed"
    # the firewall followed the LAN onto the bridge (else c2 would have been locked out)
    rules = router.run("nft", "list", "table", "inet", "nixie").stdout
    assert 'iifname "br-lan" udp dport' in rules and '"lan0"' not in rules
    st = json.loads(run_nixie("net", "status", "--json", config=cfg, ns=router).stdout)
    assert st["settings"]["lan_interface"] == "br-lan" and st["pending"] is None
    assert st["links"]["lan1"]["master"] == "br-lan"

    # a process applies a change and dies before anyone could roll it back
    serve.send_signal(signal.SIGKILL)
    serve.wait()
    conn = Store(state / "nixie.db").conn()
    settings = network.load_settings(conn, None)
    kernel = network.Kernel(router.name, state)
    txn = network.begin(conn, kernel, dataclasses.replace(settings, lan_address="10.66.0.1/24"), 5,
                        timer=False)
    assert "10.66.0.1/24" in addrs(router, "br-lan")
    time.sleep(5.5)
    assert "10.66.0.1/24" in addrs(router, "br-lan")  # nobody watching
    start_serve()  # its watchdog finds the overdue change
    deadline = time.monotonic() + 5
    while txn_state(state, txn["id"]) != "rolled_back" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert txn_state(state, txn["id"]) == "rolled_back"
    assert "10.77.0.1/24" in addrs(router, "br-lan") and "10.66.0.1" not in addrs(router, "br-lan")
    assert up(c1) and up(c2)


def test_wan_dhcp_client_and_its_rollback(tmp_path):
    """The WAN as a DHCP client (real udhcpc) against dnsmasq on the 'ISP' side; unconfirmed,
    the client is stopped and its address and default route go with it."""
    nss, procs = [], []
    try:
        router, isp = Netns(), Netns()
        nss += [router, isp]
        veth(router, "wan0", isp, "eth0")
        router.run("ip", "link", "add", "lan0", "type", "bridge")
        router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
        isp.run("ip", "addr", "add", "192.0.2.254/24", "dev", "eth0")
        procs.append(isp.popen("dnsmasq", "--no-daemon", "--port=0", "--interface=eth0",
                               "--bind-interfaces", "--dhcp-range=192.0.2.100,192.0.2.150,1h",
                               "--dhcp-option=3,192.0.2.254", "--pid-file=", "--user=root",
                               f"--dhcp-leasefile={tmp_path / 'isp.leases'}",
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cfg = example_config(state_dir=str(tmp_path / "state"), interface="lan0")
        cfg["dhcp"]["mode"] = "off"
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))

        r = run_nixie("net", "apply", "--wan-interface", "wan0", "--wan-mode", "dhcp",
                      "--confirm-seconds", "8", "--json", config=path, ns=router)
        assert r.returncode == 0, r.stderr
        txn = json.loads(r.stdout)
        assert txn["ops"] == ["up lan0", "dhcp_start wan0"]
        deadline = time.monotonic() + 8
        while "192.0.2.1" not in addrs(router, "wan0") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "inet 192.0.2.1" in addrs(router, "wan0"), addrs(router, "wan0")
        assert "default via 192.0.2.254 dev wan0" in router.run("ip", "route").stdout
        assert "192.0.2.1" in (tmp_path / "isp.leases").read_text()  # dnsmasq handed it out
        assert router.run("pgrep", "-f", "udhcpc -f -R -i wan0", check=False).returncode == 0

        deadline = time.monotonic() + 12
        state = tmp_path / "state"
        while txn_state(state, txn["id"]) != "rolled_back" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert txn_state(state, txn["id"]) == "rolled_back"
        assert "192.0.2.1" not in addrs(router, "wan0")
        assert "default" not in router.run("ip", "route").stdout
        assert router.run("pgrep", "-f", "udhcpc -f -R -i wan0", check=False).returncode != 0
    finally:
        stop_processes(procs)
        for ns in nss:
            ns.close()


def test_serve_sets_up_saved_settings_at_start(lab):
    """As after a reboot: the confirmed settings (a bridge over both LAN ports) are in the DB,
    the kernel has plain ports; serve with network.manage builds the bridge and the firewall
    for it."""
    router, c1, c2, cfg, state, start_serve = lab
    data = json.loads(cfg.read_text())
    data["network"] = {"manage": True}
    cfg.write_text(json.dumps(data))
    conn = Store(state / "nixie.db").conn()
    network._save_settings(conn, network.NetworkSettings(
        lan_interface="br-lan", lan_address="10.77.0.1/24", lan_ports=("lan0", "lan1")))
    start_serve()
    assert wait_port(c2, *ADMIN, timeout=10) and up(c1)
    assert "master br-lan" in router.run("ip", "link", "show", "lan0").stdout
    assert "master br-lan" in router.run("ip", "link", "show", "lan1").stdout
    assert "10.77.0.1/24" in addrs(router, "br-lan") and "10.77.0.1" not in addrs(router, "lan0")
    assert 'iifname "br-lan" tcp dport' in router.run("nft", "list", "table", "inet", "nixie").stdout


def test_in_process_change_rolls_back_on_its_timer(tmp_path):
    """The web UI's path: `begin` in a long-lived process, nobody else watching."""
    with Netns() as router, Netns() as other:
        veth(router, "lan0", other, "eth0")
        router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
        conn = Store(tmp_path / "nixie.db").conn()
        kernel = network.Kernel(router.name, tmp_path)
        settings = network.NetworkSettings("lan0", "10.77.0.1/24",
                                           routes=(network.StaticRoute("10.200.0.0/16", "10.77.0.9"),))
        # a change the kernel refuses (the gateway is off the new network) is undone at once
        with pytest.raises(network.NetworkError, match="unreachable"):
            network.begin(conn, kernel, dataclasses.replace(settings, lan_address="10.88.0.1/24"), 5)
        assert "10.77.0.1/24" in addrs(router, "lan0") and "10.88" not in addrs(router, "lan0")
        assert network.pending(conn) is None
        # an applicable bad change rolls back when its timer fires
        txn = network.begin(conn, kernel, network.NetworkSettings("lan0", "10.88.0.1/24"), 5)
        assert "10.88.0.1/24" in addrs(router, "lan0")
        deadline = time.monotonic() + 15
        while network._row(conn, txn["id"])["state"] != "rolled_back" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert network._row(conn, txn["id"])["state"] == "rolled_back"
        assert "10.77.0.1/24" in addrs(router, "lan0") and "10.88" not in addrs(router, "lan0")
        # and a good one, confirmed through the UI entry point's pieces
        txn = network.begin(conn, kernel, settings, 5)
        assert "10.200.0.0/16 via 10.77.0.9 dev lan0" in router.run("ip", "route").stdout
        network.confirm(conn, txn["id"])
        time.sleep(5.5)
        assert "10.200.0.0/16 via 10.77.0.9 dev lan0" in router.run("ip", "route").stdout
        assert network._row(conn, txn["id"])["state"] == "confirmed"


def test_a_change_pending_across_a_reboot_is_rolled_back_when_serve_starts(lab):
    """A change made in an earlier boot (its boot id is not this one's) and never
    confirmed: serve rolls it back at start, though its window (10 min) is far from over."""
    router, c1, c2, cfg, state, start_serve = lab
    conn = Store(state / "nixie.db").conn()
    kernel = network.Kernel(router.name, state)
    earlier_boot = network.Clocks(boot_id=lambda: "an-earlier-boot")
    txn = network.begin(conn, kernel, network.NetworkSettings("lan0", "10.66.0.1/24"), 600,
                        timer=False, clocks=earlier_boot)
    assert "10.66.0.1/24" in addrs(router, "lan0") and not up(c1)
    assert network.pending(conn, earlier_boot)["seconds_left"] > 500
    start_serve()
    row = txn_row(state, txn["id"])
    assert row["state"] == "rolled_back", dict(row)
    assert row["error"] == "the machine restarted before the change was confirmed"
    assert "10.77.0.1/24" in addrs(router, "lan0") and "10.66.0.1" not in addrs(router, "lan0")
    assert wait_port(c1, *ADMIN, timeout=10)  # the admin UI is back on the LAN


def test_a_wan_renewal_with_the_same_address_leaves_it_alone(tmp_path):
    """The WAN's DHCP client renews (udhcpc, SIGUSR1) and gets the same address: the
    address is not deleted and added again (which drops every NAT session behind it):
    `ip monitor` sees no deletion, while the ISP's server saw the renewal."""
    nss, procs = [], []
    try:
        router, isp = Netns(), Netns()
        nss += [router, isp]
        veth(router, "wan0", isp, "eth0")
        router.run("ip", "link", "add", "lan0", "type", "bridge")
        router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "lan0")
        isp.run("ip", "addr", "add", "192.0.2.254/24", "dev", "eth0")
        dnsmasq_log = tmp_path / "dnsmasq.log"
        procs.append(isp.popen("dnsmasq", "--no-daemon", "--port=0", "--interface=eth0",
                               "--bind-interfaces", "--dhcp-range=192.0.2.100,192.0.2.150,1h",
                               "--dhcp-option=3,192.0.2.254", "--pid-file=", "--user=root",
                               "--log-dhcp", f"--log-facility={dnsmasq_log}",
                               f"--dhcp-leasefile={tmp_path / 'isp.leases'}",
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        state = tmp_path / "state"
        conn = Store(state / "nixie.db").conn()
        kernel = network.Kernel(router.name, state)
        txn = network.begin(conn, kernel, network.NetworkSettings(
            "lan0", "10.77.0.1/24", wan_interface="wan0", wan_mode="dhcp"), 60, timer=False)
        deadline = time.monotonic() + 10
        while "192.0.2.1" not in addrs(router, "wan0") and time.monotonic() < deadline:
            time.sleep(0.1)
        first = addrs(router, "wan0")
        assert "inet 192.0.2.1" in first, first
        monitor = router.popen("ip", "-o", "monitor", "address", "dev", "wan0",
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(monitor)
        time.sleep(0.3)  # ip monitor is listening
        acks = dnsmasq_log.read_text().count("DHCPACK")
        os.kill(kernel.dhcp_pid("wan0"), signal.SIGUSR1)  # renew now
        deadline = time.monotonic() + 10
        while dnsmasq_log.read_text().count("DHCPACK") == acks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dnsmasq_log.read_text().count("DHCPACK") > acks  # it did renew
        time.sleep(1.0)  # the client's script ran
        stop_processes([monitor])
        seen = monitor.stdout.read()
        assert "Deleted" not in seen, seen
        assert addrs(router, "wan0") == first
        network.rollback(conn, kernel, txn["id"])
    finally:
        stop_processes(procs)
        for ns in nss:
            ns.close()
