"""The admin web server and HTTP boot against hostile clients, on loopback, with the
real waitress servers (issue 15, findings 7, 11 and 14): HTTPS with the certificate
`nixie status` names, plain HTTP redirected, HSTS, an installed certificate served;
oversized bodies refused before they are read; idle connections that neither lock
the admin out nor stay; headers dribbled a byte at a time cut off; a Range with a
non-ASCII digit answered 416."""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config.schema import example_config, parse_config
from appliance.domain import tls_cert
from appliance.runtime import webserver
from netservices import listen
from netservices.httpboot import BootSettings, create_boot_app, make_server
from netservices.httpboot.streaming import Unsatisfiable, parse_range
from netservices.listen import client_group
from tests.bootlab import SpecBackend
from tests.conftest import run_nixie, wait_for
from tests.webapp import make_app

pytestmark = pytest.mark.unit

UNVERIFIED = ssl._create_unverified_context()
BIG = 42 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, **web):
    data = example_config(state_dir=str(tmp_path / "state"), interface="lo",
                          address="127.0.0.1/8")
    data["dhcp"]["range"] = ["127.0.0.100", "127.0.0.199"]
    data["web"].update({"listen": [f"127.0.0.1:{_free_port()}"], "workers": 1, **web})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return parse_config(data, str(path))


class Running:
    """The admin web server (WebService, as serve runs it with web.workers = 1)."""

    def __init__(self, tmp_path, **web):
        self.cfg = _config(tmp_path, **web)
        self.port = int(self.cfg.web.listen[0].rpartition(":")[2])
        webserver.prepare_tls(self.cfg)
        app, _store, _ = make_app(self.cfg.state_dir)
        self.web = webserver.WebService(app, self.cfg)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.web.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        assert wait_for(lambda: _can_connect(self.port), timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.web.shutdown()
        self.thread.join(10)

    def tls(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return UNVERIFIED.wrap_socket(raw, server_hostname="127.0.0.1")

    def https(self, request: bytes) -> bytes:
        with self.tls() as s:
            s.sendall(request)
            return _read_all(s)

    def plain(self, request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(request)
            return _read_all(s)


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _read_all(s) -> bytes:
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not d:
            break
        out += d
    return out


def _get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def _headers(answer: bytes) -> tuple[int, dict[str, str]]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return int(head[0].split()[1]), {k.lower(): v.strip() for k, _, v in
                                     (h.partition(":") for h in head[1:])}


# ------------------------------------------------------------------ HTTPS (finding 14)

def test_https_by_default_with_the_certificate_nixie_status_names(tmp_path):
    with Running(tmp_path) as run:
        with run.tls() as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(_get("/healthz"))
            answer = _read_all(s)
        status = run_nixie("status", "--json", config=run.cfg.path)
        assert status.returncode == 0, status.stderr
        web = json.loads(status.stdout)["web"]
        assert web["tls"] is True and web["urls"] == [f"https://127.0.0.1:{run.port}/"]
        assert web["certificate"]["sha256"] == tls_cert.fingerprint_of_der(der)
        assert web["certificate"]["self_signed"] is True
        human = run_nixie("status", config=run.cfg.path).stdout
        assert tls_cert.fingerprint_of_der(der) in human
        code, headers = _headers(answer)
        assert code in (200, 503)
        assert headers["strict-transport-security"] == "max-age=31536000"
    paths = tls_cert.cert_paths(run.cfg)
    assert os.stat(paths.key).st_mode & 0o777 == 0o600
    assert os.stat(paths.key.parent).st_mode & 0o777 == 0o700


def test_plain_http_on_the_admin_port_is_redirected_to_https(tmp_path):
    with Running(tmp_path) as run:
        answer = run.plain(_get("/hosts/?q=a%20b", host=f"127.0.0.1:{run.port}"))
        code, headers = _headers(answer)
        assert code == 301
        assert headers["location"] == f"https://127.0.0.1:{run.port}/hosts/?q=a%20b"
        assert "strict-transport-security" not in headers
        # a Host header without a port still lands on this port; a forged one gives way
        code, headers = _headers(run.plain(_get("/", host="router.lan")))
        assert headers["location"] == f"https://router.lan:{run.port}/"
        code, headers = _headers(run.plain(_get("/", host="evil.example/x?")))
        assert headers["location"].startswith("https://") and "evil" not in headers["location"]
        post = (b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
                b"Connection: close\r\n\r\nabc")
        assert _headers(run.plain(post))[0] == 308


def test_the_wizard_shows_the_certificate_fingerprint(tmp_path):
    with Running(tmp_path) as run:
        body = run.https(_get("/setup")).decode()
        assert tls_cert.info(run.cfg).fingerprint in body


def test_an_installed_certificate_is_served_without_a_restart(tmp_path):
    key, cert = tls_cert.self_signed(["admin-own.example"])
    (tmp_path / "own.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "own.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with Running(tmp_path) as run:
        before = _served_fingerprint(run)
        other_key, _ = tls_cert.self_signed(["other"])
        (tmp_path / "wrong.key").write_bytes(other_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        refused = run_nixie("admin", "cert", "install", str(tmp_path / "own.pem"),
                            str(tmp_path / "wrong.key"), config=run.cfg.path)
        assert refused.returncode != 0 and "does not belong" in refused.stderr
        r = run_nixie("admin", "cert", "install", str(tmp_path / "own.pem"),
                      str(tmp_path / "own.key"), "--json", config=run.cfg.path)
        assert r.returncode == 0, r.stderr
        want = tls_cert.fingerprint(cert)
        assert json.loads(r.stdout)["sha256"] == want != before
        assert wait_for(lambda: _served_fingerprint(run) == want, timeout=10)


def test_a_configured_certificate_pair_is_served(tmp_path):
    key, cert = tls_cert.self_signed(["configured.example"])
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "c.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with Running(tmp_path, tls_cert_file=str(tmp_path / "c.pem"),
                 tls_key_file=str(tmp_path / "c.key")) as run:
        assert _served_fingerprint(run) == tls_cert.fingerprint(cert)


def _served_fingerprint(run: Running) -> str:
    with run.tls() as s:
        return tls_cert.fingerprint_of_der(s.getpeercert(binary_form=True))


def test_web_tls_off_serves_plain_http(tmp_path):
    with Running(tmp_path, tls=False) as run:
        code, headers = _headers(run.plain(_get("/healthz")))
        assert code in (200, 503) and "strict-transport-security" not in headers


# ------------------------------------------------------------------ limits (finding 7)

def _oversized_post(port: int, path: str, size: int, tls: bool) -> tuple[bytes, int]:
    """POST `size` bytes: the answer the server gave after the headers alone, and how
    many body bytes it let us send before it closed the connection."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = UNVERIFIED.wrap_socket(raw, server_hostname="x") if tls else raw
    with s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode())
        answer = s.recv(65536)  # before a single body byte
        sent, chunk = 0, b"x" * 65536
        try:
            while sent < size:
                sent += s.send(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            pass
    return answer, sent


def test_a_huge_body_to_the_admin_api_is_refused_before_it_is_read(tmp_path):
    with Running(tmp_path) as run:
        answer, sent = _oversized_post(run.port, "/api/v1/hosts", BIG, tls=True)
        assert _headers(answer)[0] == 413
        assert sent < BIG // 2  # the connection closed long before the 42 MB went out
        # an import may be larger than a form, but not unbounded
        body = b"x" * (2 * 1024 * 1024)
        answer = run.https(b"POST /api/v1/hosts-json HTTP/1.1\r\nHost: x\r\nConnection: close"
                           b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert _headers(answer)[0] in (401, 503)  # read whole; refused: no login, no setup yet
        answer, _ = _oversized_post(run.port, "/api/v1/hosts-json", BIG, tls=True)
        assert _headers(answer)[0] == 413


def test_a_huge_body_to_the_agent_endpoint_is_refused_before_it_is_read(tmp_path):
    def app(environ, start_response):  # the body would be read here: it never gets here
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    srv = make_server(app, "127.0.0.1:0", threads=2)
    port = srv.socket.getsockname()[1]
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        answer, sent = _oversized_post(port, "/api/v1/agent/events", BIG, tls=False)
        assert _headers(answer)[0] == 413
        assert sent < BIG // 2
        chunked = (b"POST /api/v1/agent/events HTTP/1.1\r\nHost: x\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(chunked)
            try:
                for _ in range(64):  # 64 chunks of 64 KiB: the limit is 64 KiB
                    s.sendall(b"10000\r\n" + b"y" * 0x10000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert _headers(_read_all(s))[0] == 413
    finally:
        srv.close()
        th.join(5)


def _raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def test_a_thousand_idle_connections_keep_nobody_out_and_are_closed(tmp_path):
    _raise_fd_limit(4096)
    with Running(tmp_path, idle_timeout_seconds=3, max_connections=128,
                 max_connections_per_client=4096) as run:
        idle = []
        try:
            for i in range(1000):  # from many loopback addresses, as many clients would
                s = socket.socket()
                s.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
                s.settimeout(10)
                s.connect(("127.0.0.1", run.port))
                idle.append(s)
            code, _ = _headers(run.https(_get("/healthz")))
            assert code in (200, 503)  # the admin's request is answered at once
            assert wait_for(lambda: all(_closed_by_server(s) for s in idle), timeout=30)
        finally:
            for s in idle:
                s.close()


def _closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_one_client_cannot_take_every_connection(tmp_path):
    with Running(tmp_path, max_connections_per_client=8) as run:
        mine = [socket.create_connection(("127.0.0.1", run.port), timeout=10)
                for _ in range(40)]
        try:
            assert wait_for(lambda: sum(not _closed_by_server(s) for s in mine) <= 8, timeout=10)
            code, _ = _headers(run.https(_get("/healthz")))
            assert code in (200, 503)
        finally:
            for s in mine:
                s.close()


@pytest.mark.parametrize("addr, key", [
    ("10.0.0.9", "10.0.0.9"), ("::ffff:10.0.0.9", "10.0.0.9"),
    ("fd00:77::99", "fd00:77::/64"), ("fd00:77::abcd:ef01:2345:6789", "fd00:77::/64"),
    ("fe80::1%eth0", "fe80::/64"), ("::1", "::/64"), ("unix-socket", "unix-socket")])
def test_a_client_is_its_ipv4_address_or_its_ipv6_64(addr, key):
    """What per-client limits (connections here, failed logins) count: an IPv6 host
    may use any address of its /64, so its /64 is the client."""
    assert client_group(addr) == key
    # one name for one thing: DHCP's pool.client_key (a lease's client) is the only client_key
    assert not hasattr(listen, "client_key")


@pytest.mark.parametrize("tls", [False, True])
def test_headers_dribbled_a_byte_at_a_time_are_cut_off(tmp_path, tls):
    """Slow-loris: a byte every 0.2 s keeps the connection busy, never idle; the
    request timeout ends it (plain: headers; TLS: the handshake itself)."""
    with Running(tmp_path, request_timeout_seconds=2, idle_timeout_seconds=60) as run:
        s = socket.create_connection(("127.0.0.1", run.port), timeout=10)
        with s:
            if tls:
                hello = _client_hello()
                drip = iter(hello)
            else:
                drip = iter(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000)
            cut = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    s.send(bytes([next(drip)]))
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                    break
                except StopIteration:
                    break
                if _closed_by_server(s):
                    cut = True
                    break
                s.setblocking(True)
                time.sleep(0.2)
            assert cut, "the dribbling client was never cut off"
        code, _ = _headers(run.https(_get("/healthz")))
        assert code in (200, 503)


def _client_hello() -> bytes:
    """The first flight of a real TLS client (its ClientHello)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = UNVERIFIED.wrap_bio(inc, out, server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read() * 20  # repeated: long enough to outlast the timeout


# ------------------------------------------------------------------ Range (finding 11)

@pytest.mark.parametrize("header", ["bytes=٣-", "bytes=²-", "bytes=0-³", "bytes=-٣",
                                    "bytes=\xd9\xa3-", "bytes=1\u0661-"])
def test_a_range_with_a_non_ascii_digit_is_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 10)


_DIGITISH = st.sampled_from(list("0123456789-= ,") + ["²", "³", "¹", "٣", "١", "۵", "߁",
                                                        "\u0966", "\uff11", "\xd9", "\xa3"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_DIGITISH, max_size=12).map("".join), st.integers(0, 10_000),
       st.sampled_from(["bytes=", "bytes =", "BYTES=", ""]))
def test_parse_range_never_fails_but_with_unsatisfiable(spec, size, unit):
    """Whatever follows `bytes=`: a range inside the resource, None, or
    Unsatisfiable; never another exception."""
    try:
        r = parse_range(unit + spec, size)
    except Unsatisfiable:
        return
    if r is not None:
        start, n = r
        assert 0 <= start < size and 1 <= n and start + n <= size


def test_the_boot_server_answers_416_to_a_range_with_a_non_ascii_digit(tmp_path):
    """The real boot app on the real server: an iPXE binary asked for with
    `Range: bytes=٣-` (UTF-8 on the wire) or `bytes=²-` is 416, not 500."""
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    (tftp / "ipxe.efi").write_bytes(os.urandom(5000))
    backend = SpecBackend({"hosts": [], "systems": {}, "dispatch": {}, "pending": []})
    app = create_boot_app(hosts=backend, events=backend, artifacts=backend, agent=backend,
                          settings=BootSettings("http://127.0.0.1:1"), tftp_root=str(tftp))
    srv = make_server(app, "127.0.0.1:0", threads=2)
    port = srv.socket.getsockname()[1]
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        for rng in ("bytes=٣-".encode(), b"bytes=\xb2-", b"bytes=0-99"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /ipxe/ipxe.efi HTTP/1.1\r\nHost: x\r\nRange: " + rng
                          + b"\r\nConnection: close\r\n\r\n")
                code = _headers(_read_all(s))[0]
            assert code == (206 if rng == b"bytes=0-99" else 416), rng
    finally:
        srv.close()
        th.join(5)
