"""Issue 16: the admin web UI (the REST API and /metrics with it) over IPv6, against a
real `nixie serve` (two web worker processes) in a namespace, with `web.listen` left
to its default and IPv6 on the LAN:

- it listens on the LAN address and the router's LAN IPv6 address, and nowhere else
  (`ss`; a connection to the router's other IPv6 address is refused);
- real curl over IPv6 in a LAN namespace verifies the served certificate against the
  one serve made (so the IPv6 address is in its names), logs in through the form
  (CSRF token, session cookie) and reads a page behind the login;
- /metrics answers a LAN-prefix source and refuses a source outside the LAN prefix,
  as it does for IPv4;
- abuse over IPv6 is bounded as over IPv4: a huge body is refused unread, headers
  dribbled a byte at a time are cut off, and one client's /64 (40 addresses) keeps
  at most `web.max_connections_per_client` connections per worker while an IPv4
  admin is still served."""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.domain import tls_cert
from tests.conftest import run_nixie
from tests.netns.dhcp6_lab import Lan6
from tests.netns.serve_lab import admin_api_token
from tests.netns.test_listen_defaults import listening
from tests.webapp import PASSWORD

pytestmark = pytest.mark.netns

LAN_IP, CLIENT_IP = "10.77.0.1", "10.77.0.50"
ROUTER6, CLIENT6 = "fd00:77::1", "fd00:77::99"
OUTSIDE_IP, OUTSIDE6 = "198.51.100.7", "2001:db8:5::7"  # routed to the LAN link, not in it
OTHER6 = "2001:db8:9::1"  # another address of the router's
PORT, WORKERS, PER_CLIENT = 8080, 2, 8
URL6, URL4 = f"https://[{ROUTER6}]:{PORT}", f"https://{LAN_IP}:{PORT}"

# a client that dribbles request headers a byte every 0.2 s; prints how it ended
DRIBBLE = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
t0 = time.monotonic()
for b in b"GET /login HTTP/1.1\\r\\nHost: x\\r\\nX-Slow: " + b"a" * 10000:
    try:
        s.send(bytes([b]))
        s.setblocking(False)
        if s.recv(1) == b"":
            break
    except BlockingIOError:
        pass
    except OSError:
        break
    s.setblocking(True)
    if time.monotonic() - t0 > 30:
        print("never cut"); sys.exit()
    time.sleep(0.2)
print("cut after %.1f s" % (time.monotonic() - t0))
"""

# one connection from each of the given source addresses; prints how many the server
# left open after a while
HOLD = """
import socket, sys, time
port, dst, srcs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
mine = []
for src in srcs:
    s = socket.socket(fam)
    s.bind((src, 0))
    s.connect((dst, port))
    mine.append(s)
    time.sleep(0.02)
def open_(s):
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
deadline = time.monotonic() + 10
while time.monotonic() < deadline and sum(map(open_, mine)) > MAX_OPEN:
    time.sleep(0.2)
print(sum(map(open_, mine)))
""".replace("MAX_OPEN", str(PER_CLIENT * WORKERS))


# a TLS client announcing a huge form body; prints the status line it gets
HUGE = """
import socket, ssl, sys
ctx = ssl._create_unverified_context()
s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10))
s.sendall(b"POST /login HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/x-www-form-urlencoded"
          b"\\r\\nContent-Length: %d\\r\\n\\r\\nusername=" % (64 << 20))
print(s.recv(4096).decode("latin-1").split("\\r\\n")[0])
"""


# the certificate the web UI serves at host:port, as PEM
PEER_CERT = """
import ssl, sys
print(ssl.get_server_certificate((sys.argv[1], int(sys.argv[2])), timeout=10))
"""


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_old_certificate(state) -> str:
    """The router's own self-signed certificate as made before the web UI listened on
    IPv6 (no IPv6 address in its names); its fingerprint."""
    key, cert = tls_cert.self_signed(["nixie", LAN_IP])
    d = state / "tls"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    (d / "key.pem").write_bytes(_pem(key))
    (d / "key.pem").chmod(0o600)
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return tls_cert.fingerprint(cert)


def _served(lan, host: str) -> x509.Certificate:
    out = lan.client.run(sys.executable, "-c", PEER_CERT, host, str(PORT), timeout=30).stdout
    return x509.load_pem_x509_certificate(out.encode())


def _ip_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(a) for a in san.get_values_for_type(x509.IPAddress)}


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web6")
    lan = Lan6(tmp, dhcp6={"mode": "off"})
    try:
        data = json.loads(lan.config.read_text())
        data["web"].pop("listen")  # the default: the LAN address (and IPv6 with it)
        data["web"].update(workers=WORKERS, max_connections_per_client=PER_CLIENT,
                           request_timeout_seconds=2, idle_timeout_seconds=60)
        lan.config.write_text(json.dumps(data))
        admin_api_token(lan.config)  # the admin user (setup complete)
        lan.old_sha256 = _write_old_certificate(lan.tmp / "state")
        c = lan.client
        c.run("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        c.run("ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0")
        for a in (CLIENT6, OUTSIDE6, *(f"fd00:77::1:{i:x}" for i in range(40))):
            c.run("ip", "-6", "addr", "add", f"{a}/64", "dev", "eth0", "nodad")
        lan.router.run("ip", "route", "add", "198.51.100.0/24", "dev", "lan0")
        lan.router.run("ip", "-6", "route", "add", "2001:db8:5::/64", "dev", "lan0")
        lan.router.run("ip", "-6", "addr", "add", f"{OTHER6}/64", "dev", "lo")
        lan.start(dhcp6=False)
        yield lan
    finally:
        lan.close()


def curl(lan, *args: str, check: bool = True) -> str:
    """curl in the LAN client namespace, trusting only the certificate serve made."""
    cert = lan.tmp / "state" / "tls" / "cert.pem"
    r = lan.client.run("curl", "-sS", "-g", "--max-time", "20", "--cacert", str(cert), *args,
                       check=check)
    return r.stdout + r.stderr


def test_the_web_ui_listens_on_the_lan_ipv6_address_and_nowhere_else(lan):
    sockets = listening(lan.router)
    assert {s for s in sockets if s.endswith(f":{PORT}")} == {
        f"{LAN_IP}:{PORT}", f"[{ROUTER6}]:{PORT}"}, sockets
    probe = ("import socket,sys\ns=socket.socket(socket.AF_INET6); s.settimeout(3)\n"
             "print(s.connect_ex((sys.argv[1], int(sys.argv[2]))))\n")
    r = lan.router.run(sys.executable, "-c", probe, OTHER6, str(PORT))
    assert r.stdout.strip() != "0", f"[{OTHER6}]:{PORT} accepted a connection"


def test_status_and_the_start_up_line_name_the_ipv6_url_and_it_answers(lan):
    """`nixie status` and serve's "admin web UI" line list every address the web UI
    listens on, the LAN IPv6 one included; curl to exactly the listed URL answers."""
    r = run_nixie("status", config=lan.config, ns=lan.router)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("web: "))
    urls = line.removeprefix("web: ").split(", ")
    assert urls == [f"{URL4}/", f"{URL6}/"], line
    r = run_nixie("status", "--json", config=lan.config, ns=lan.router)
    assert json.loads(r.stdout)["web"]["urls"] == urls, r.stdout
    announced = re.search(r'admin web UI.* url="([^"]+)"', lan.log.read_text())
    assert announced and announced.group(1).split() == urls, lan.log.read_text()[-2000:]
    out = curl(lan, "-o", "/dev/null", "-w", "%{http_code}", f"{urls[1]}login")
    assert out == "200", out


def test_an_old_self_signed_certificate_is_made_again_with_the_ipv6_address(lan):
    """serve started with the router's own certificate from before the IPv6 listener:
    the certificate served over IPv6 names the IPv6 address, the old pair is kept as
    .old, the log and `nixie status` show the fingerprint change."""
    served = _served(lan, ROUTER6)
    assert {ROUTER6, LAN_IP} <= _ip_names(served), _ip_names(served)
    new = tls_cert.fingerprint(served)
    assert new != lan.old_sha256
    tls = lan.tmp / "state" / "tls"
    old = x509.load_pem_x509_certificate((tls / "cert.pem.old").read_bytes())
    assert tls_cert.fingerprint(old) == lan.old_sha256
    assert (tls / "key.pem.old").stat().st_mode & 0o777 == 0o600
    log = lan.log.read_text()
    assert (f"old_sha256={lan.old_sha256}" in log and f"sha256={new}" in log
            and f"missing={ROUTER6}" in log), log[-2000:]
    r = run_nixie("status", "--json", config=lan.config, ns=lan.router)
    web = json.loads(r.stdout)["web"]
    assert web["certificate"]["sha256"] == new, web
    assert web["previous_certificate"]["sha256"] == lan.old_sha256, web
    text = run_nixie("status", config=lan.config, ns=lan.router).stdout
    assert f"certificate sha256 {new}" in text and f"replaces certificate sha256 {lan.old_sha256}" in text, text


def test_login_over_ipv6_with_the_certificate_verified(lan):
    jar = str(lan.tmp / "cookies")
    page = curl(lan, "-c", jar, "-b", jar, f"{URL6}/login")  # verified: the IPv6 SAN
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, page[:2000]
    # without the CSRF token the form is refused, with it the admin is in
    out = curl(lan, "-c", jar, "-b", jar, "-o", "/dev/null", "-w", "%{http_code}",
               "-e", f"{URL6}/login", "--data-urlencode", "username=admin",
               "--data-urlencode", f"password={PASSWORD}", f"{URL6}/login")
    assert out == "400", out
    out = curl(lan, "-c", jar, "-b", jar, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
               "-e", f"{URL6}/login", "--data-urlencode", "username=admin",
               "--data-urlencode", f"password={PASSWORD}",
               "--data-urlencode", f"csrf_token={token.group(1)}", f"{URL6}/login")
    assert out.startswith("302 "), out
    page = curl(lan, "-b", jar, "-w", "\n%{http_code}", f"{URL6}/settings/")
    body, _, code = page.rpartition("\n")
    assert code == "200" and "lan_address6" in body, page[-500:]
    # the login came from the client's IPv6 address, and the events say so
    events = curl(lan, "-b", jar, f"{URL6}/events/")
    assert re.search(r"admin logged in from fd00:77::[0-9a-f:]+ ", events), events[-1500:]
    # without the session: the login page, not the settings
    out = curl(lan, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", f"{URL6}/settings/")
    assert out.startswith("302 ") and "/login" in out, out


@pytest.mark.parametrize("url, inside, outside", [
    (URL6, CLIENT6, OUTSIDE6), (URL4, CLIENT_IP, OUTSIDE_IP)], ids=["ipv6", "ipv4"])
def test_metrics_answer_the_lan_prefix_and_refuse_a_source_outside_it(lan, url, inside, outside):
    ok = curl(lan, "--interface", inside, "-w", "\n%{http_code}", f"{url}/metrics")
    assert ok.endswith("\n200") and "nixie_" in ok, ok[-500:]
    refused = curl(lan, "--interface", outside, "-o", "/dev/null", "-w", "%{http_code}",
                   f"{url}/metrics")
    assert refused == "403", refused


def test_a_huge_body_over_ipv6_is_refused_unread(lan):
    """Headers announcing a 64 MiB body, then a trickle of it: 413 comes back before
    the body is read, over IPv6 as over IPv4."""
    for host in (ROUTER6, LAN_IP):
        out = lan.client.run(sys.executable, "-c", HUGE, host, str(PORT), timeout=60).stdout
        assert out.startswith("HTTP/1.1 413"), (host, out)


def test_dribbled_headers_over_ipv6_are_cut_off_like_over_ipv4(lan):
    for host in (ROUTER6, LAN_IP):
        out = lan.client.run(sys.executable, "-c", DRIBBLE, host, str(PORT), timeout=60).stdout
        assert out.startswith("cut after"), (host, out)
        assert float(out.split()[2]) < 15, (host, out)  # request_timeout 2 s, checked each 1 s


def test_one_ipv6_client_is_its_64_for_the_connection_limit(lan):
    """40 connections from 40 addresses of one /64: the server keeps at most
    PER_CLIENT per worker of them; an IPv4 admin is still served meanwhile."""
    srcs = [f"fd00:77::1:{i:x}" for i in range(40)]
    held = lan.client.popen(sys.executable, "-c", HOLD, str(PORT), ROUTER6, *srcs,
                            stdout=subprocess.PIPE, text=True)
    try:
        out = curl(lan, "-o", "/dev/null", "-w", "%{http_code}", f"{URL4}/login")
        assert out == "200", out
        left = int(held.communicate(timeout=60)[0].strip())
    finally:
        if held.poll() is None:
            held.kill()
    assert left <= PER_CLIENT * WORKERS, left


def test_an_installed_certificate_is_never_replaced(lan, tmp_path):
    """Last in this module (it restarts serve): a CA-signed certificate without the
    IPv6 address, installed with `nixie admin cert install`, is the one served over
    IPv6 after a restart, byte for byte on disk; no new one is made."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, LAN_IP)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LAN_IP))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(_pem(key))
    r = run_nixie("admin", "cert", "install", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"),
                  config=lan.config)
    assert r.returncode == 0, r.stdout + r.stderr
    tls = lan.tmp / "state" / "tls"
    installed, old = (tls / "cert.pem").read_bytes(), (tls / "cert.pem.old").read_bytes()
    lan.stop()
    lan.start(dhcp6=False)
    assert tls_cert.fingerprint(_served(lan, ROUTER6)) == tls_cert.fingerprint(cert)
    assert (tls / "cert.pem").read_bytes() == installed
    assert (tls / "cert.pem.old").read_bytes() == old
    web = json.loads(run_nixie("status", "--json", config=lan.config).stdout)["web"]
    assert web["certificate"]["self_signed"] is False and web["previous_certificate"] is None
