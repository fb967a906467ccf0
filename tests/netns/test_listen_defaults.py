"""Issue 15, finding 13: a config file that does not name the listeners gets them
on the LAN address only, never on every address. The real `nixie serve` in a
namespace with a second (WAN-side) address: the web UI, HTTP boot, DNS and TFTP
answer on the LAN address and refuse a connection to the other one; the setup
code is printed once in its log and kept 0600 in the state dir."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from lab.netns import Netns, bridge, serving, start_serve, stop_processes, veth
from tests.netns.dhcp6_lab import Lan6
from tests.netns.serve_lab import http_get, router_config
from tests.netns.test_dns_hostile import answers

LAN_IP = "10.77.0.1"
WAN_IP = "192.0.2.1"
ROUTER6 = "fd00:77::1"
CLIENT6 = "fd00:77::99"
OTHER6 = "2001:db8:9::1"

LISTENERS = (("tftp", "listen"), ("boot", "http_listen"), ("web", "listen"), ("dns", "listen"))

CONNECT = ("import socket,sys\n"
           "s=socket.socket(); s.settimeout(3)\n"
           "print(s.connect_ex((sys.argv[1], int(sys.argv[2]))))\n")
CONNECT6 = CONNECT.replace("socket.socket()", "socket.socket(socket.AF_INET6)")


def listening(ns) -> set[str]:
    """Local addresses of the TCP and UDP sockets listening in `ns`."""
    out = ns.run("ss", "-Hlntu").stdout
    return {line.split()[4] for line in out.splitlines() if line.strip()}


def test_listeners_default_to_the_lan_address(tmp_path):
    path = router_config(tmp_path, dns={"enable": True})
    data = json.loads(path.read_text())
    for section, key in LISTENERS:
        data[section].pop(key)  # what a hand-written config that names no listener gets
    path.write_text(json.dumps(data))
    log = tmp_path / "serve.log"
    with Netns() as ns:
        bridge(ns, "br-lan", f"{LAN_IP}/24")
        ns.run("ip", "addr", "add", f"{WAN_IP}/24", "dev", "lo")
        with serving(ns, path, log, [(LAN_IP, 8080), (LAN_IP, 8081)]):
            sockets = listening(ns)
            for port in (8080, 8081, 53, 69):
                assert f"{LAN_IP}:{port}" in sockets, sockets
                assert f"0.0.0.0:{port}" not in sockets and f"*:{port}" not in sockets, sockets
            for port in (8080, 8081):
                r = ns.run(sys.executable, "-c", CONNECT, WAN_IP, str(port))
                assert r.stdout.strip() != "0", f"{WAN_IP}:{port} accepted a connection"
            assert http_get(ns, f"https://{LAN_IP}:8080/setup")[0] == 200
    text = log.read_text()
    codes = re.findall(r"setup_code=([A-Z0-9-]+)", text)
    assert len(codes) == 1, text[-2000:]
    code_file = tmp_path / "state" / "setup_code"
    assert code_file.read_text().strip() == codes[0]
    assert code_file.stat().st_mode & 0o777 == 0o600



def test_with_ipv6_on_the_lan_tftp_and_http_boot_listen_on_the_lan_ipv6_address_too(tmp_path):
    """Issue 16: RA and DHCPv6 on, listeners left null: TFTP and HTTP boot (scripts,
    artifacts, the agent API), the web UI and DNS also listen on the LAN's IPv6 address,
    and only there. A real tftp-hpa client and curl in a LAN namespace fetch over IPv6;
    a connection to the router's other IPv6 address is refused."""
    lan = Lan6(tmp_path)
    try:
        data = json.loads(lan.config.read_text())
        for section, key in LISTENERS:
            data[section].pop(key)
        data["dns"]["enable"] = True
        lan.config.write_text(json.dumps(data))
        lan.router.run("ip", "-6", "addr", "add", f"{OTHER6}/64", "dev", "lo")
        lan.client.run("ip", "-6", "addr", "add", f"{CLIENT6}/64", "dev", "eth0", "nodad")
        lan.start()
        sockets = listening(lan.router)
        for port in (69, 8081, 8080, 53):
            assert f"{LAN_IP}:{port}" in sockets, sockets
            assert f"[{ROUTER6}]:{port}" in sockets, sockets
            assert not {s for s in sockets if s.endswith(f":{port}")} - {
                f"{LAN_IP}:{port}", f"[{ROUTER6}]:{port}"}, sockets
        # TFTP over IPv6: the real tftp-hpa client gets the iPXE binary byte for byte
        got = tmp_path / "snponly.efi"
        r = lan.client.run("tftp", "-6", "-m", "octet", ROUTER6, "-c", "get", "snponly.efi", str(got), check=False)
        assert r.returncode == 0 and got.read_bytes() == Path(
            "/usr/lib/ipxe/snponly.efi").read_bytes(), r.stdout + r.stderr
        # ...and nothing outside its root (a path escape over IPv6 gets an error, no file)
        leak = tmp_path / "leak"
        r = lan.client.run("tftp", "-6", "-m", "octet", ROUTER6, "-c", "get",
                           "../../../../etc/passwd", str(leak), check=False)
        assert not leak.exists() or leak.stat().st_size == 0, r.stdout
        assert "Error code" in r.stdout, r.stdout
        # HTTP boot over IPv6: the unknown-machine script, and the iPXE binary
        r = lan.client.run("curl", "-sS", "-g", "-o", "-", "-w", "\n%{http_code}",
                           f"http://[{ROUTER6}]:8081/boot/52:54:00:aa:bb:cc.ipxe")
        body, _, code = r.stdout.rpartition("\n")
        assert code == "200" and body.startswith("#!ipxe"), r.stdout
        assert f"http://[{ROUTER6}]:8081/boot/52:54:00:aa:bb:cc.ipxe" in body, body
        r = lan.client.run("curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                           f"http://[{ROUTER6}]:8081/ipxe/snponly.efi")
        assert r.stdout.split() == ["200", str(Path("/usr/lib/ipxe/snponly.efi").stat().st_size)]
        # the agent API answers over IPv6 too (a forged token is refused, not unreachable)
        r = lan.client.run("curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{http_code}",
                           "-H", "Authorization: Bearer forged", "-H", "Content-Type: application/json",
                           "--data", '{"event":"booted"}',
                           f"http://[{ROUTER6}]:8081/api/v1/agent/events")
        assert r.stdout == "401", r.stdout
        # ...and the IPv6 listener has the same limits: a 2 MB body is refused unread
        big = tmp_path / "big.json"
        big.write_bytes(b"{" + b" " * (2 << 20) + b"}")
        r = lan.client.run("curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{http_code}",
                           "-H", "Content-Type: application/json", "--data-binary", f"@{big}",
                           f"http://[{ROUTER6}]:8081/api/v1/agent/events", check=False)
        assert r.stdout == "413", (r.stdout, r.stderr)
        # nothing on the router's other IPv6 address (TFTP's UDP sockets: `ss` above)
        r = lan.router.run(sys.executable, "-c", CONNECT6, OTHER6, "8081")
        assert r.stdout.strip() != "0", f"[{OTHER6}]:8081 accepted a connection"
    finally:
        lan.close()


def test_with_ipv6_on_the_lan_listeners_given_in_the_config_are_exactly_those(tmp_path):
    """Issue 16: the LAN's IPv6 address is added only to listeners left null. With
    every listener written out (IPv4 addresses) and IPv6 on, nothing listens on IPv6
    on those ports, and a connection to the router's LAN IPv6 address is refused."""
    lan = Lan6(tmp_path)
    try:
        data = json.loads(lan.config.read_text())
        given = {"tftp": [f"{LAN_IP}:69"], "boot": f"{LAN_IP}:8081", "web": [f"{LAN_IP}:8080"],
                 "dns": [f"{LAN_IP}:53"]}
        for section, key in LISTENERS:
            data[section][key] = given[section]
        data["dns"]["enable"] = True
        lan.config.write_text(json.dumps(data))
        lan.start()
        sockets = listening(lan.router)
        for port in (69, 8081, 8080, 53):
            assert {s for s in sockets if s.endswith(f":{port}")} == {f"{LAN_IP}:{port}"}, sockets
        assert "[::]%lan0:547" in sockets, sockets  # IPv6 does run (DHCPv6)
        for port in (8080, 8081, 53):
            r = lan.router.run(sys.executable, "-c", CONNECT6, ROUTER6, str(port))
            assert r.stdout.strip() != "0", f"[{ROUTER6}]:{port} accepted a connection"
    finally:
        lan.close()


def test_dns_and_the_web_ui_take_the_lan_ipv6_address_when_the_lan_link_comes_late(tmp_path):
    """Issue 16, review: DNS puts the LAN's IPv6 address in place when it binds, not
    when it is built. serve starts before its LAN interface exists: every bind fails
    and is retried; once the link is there, DNS and the web UI listen on IPv6 too (not
    on IPv4 alone) and dig over IPv6 gets the router's AAAA."""
    data = json.loads(router_config(tmp_path, address=f"{LAN_IP}/24").read_text())
    data["lan"].update(interface="lan0", address6=f"{ROUTER6}/64", domain="lab.nixie")
    data["ra"] = {"enable": True}
    data["dns"].update(enable=True, upstream=[])
    for section, key in LISTENERS:
        data[section].pop(key)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    log = tmp_path / "serve.log"
    with Netns() as router, Netns() as client:
        proc = start_serve(router, path, log)
        try:
            time.sleep(3)  # serve runs without its LAN
            assert proc.poll() is None, log.read_text()[-3000:]
            veth(router, "lan0", client, "eth0")
            router.run("ip", "addr", "add", f"{LAN_IP}/24", "dev", "lan0")
            client.run("ip", "-6", "addr", "add", f"{CLIENT6}/64", "dev", "eth0", "nodad")
            want = {f"{LAN_IP}:53", f"[{ROUTER6}]:53", f"{LAN_IP}:8080", f"[{ROUTER6}]:8080"}
            deadline = time.monotonic() + 60
            while not want <= listening(router) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert want <= listening(router), (listening(router), log.read_text()[-3000:])
            name = router.run("hostname").stdout.strip()
            assert answers(client, f"@{ROUTER6}", f"{name}.lab.nixie", "AAAA") == [ROUTER6]
        finally:
            stop_processes([proc], timeout=10, group=True)
