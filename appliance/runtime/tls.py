"""HTTPS for the admin web UI under waitress, which has no TLS of its own.

How: each connection runs TLS through the standard library's `ssl.SSLObject`
over memory BIOs (the sans-IO form asyncio's TLS uses), inside waitress's own
non-blocking I/O loop: the channel reads raw bytes from the socket, feeds them
to the TLS object and hands waitress the plaintext; what waitress sends is
encrypted and written raw. Nothing else changes: the same waitress in serve or
in the web worker processes (each loads the certificate itself and shares only
the listening sockets), the same limits (netservices/httpserver.py), and a
client that dribbles its handshake is cut off like one dribbling its headers.

One port serves both: the first byte of a connection says which. A TLS
handshake starts with 0x16; anything else is plain HTTP, answered only with a
redirect to the same address over https (as Cockpit on 9090 and Proxmox on 8006
do: an admin who types http://router:8080 lands on the HTTPS page, and there is
no second port to open in the firewall or to keep in the config). HSTS is sent
on HTTPS answers only.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import quote

from netservices.httpserver import GuardedChannel

log = logging.getLogger("nixie.web")

TLS_RECORD = 16 * 1024  # plaintext per TLS record (the protocol's maximum)
RECV_BYTES = 64 * 1024
RELOAD_CHECK_SECONDS = 1.0
HANDSHAKE_BYTE = 0x16
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d+)?$")


class CertSource:
    """The server's SSLContext for a certificate/key pair; a pair that changes on
    disk (`nixie admin cert install`) is loaded for the next connections."""

    def __init__(self, cert: str | os.PathLike, key: str | os.PathLike):
        self.cert, self.key = Path(cert), Path(key)
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._context = self._load()
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple:
        out = []
        for p in (self.cert, self.key):
            st = p.stat()
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return self._context
        with self._lock:
            self._checked = now
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._context, self._stamp = self._load(), stamp
                    log.info("web TLS certificate reloaded", extra={"cert": str(self.cert)})
            except (OSError, ssl.SSLError) as e:  # half-installed: keep serving the old pair
                log.warning("could not reload the web TLS certificate; keeping the old one",
                            extra={"cert": str(self.cert), "error": str(e)})
            return self._context


class TlsChannel(GuardedChannel):
    """A waitress connection that is HTTPS, or plain HTTP (url_scheme "http",
    which `https_only` answers with a redirect), as its first byte says.
    Subclassed per server with `certs` set (`tls_channel`)."""

    certs: CertSource
    url_scheme = "https"

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map)
        self._tls_lock = threading.Lock()
        self._mode: str | None = None  # "tls" | "plain", from the first byte
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._raw_out = bytearray()  # encrypted bytes the socket has not taken yet
        self._in_flight = 0  # plaintext bytes whose records are still in _raw_out
        self._handshake_since: float | None = None
        self._handshake_done = False

    # ------------------------------------------------------------ what the server asks
    def receiving_since(self) -> float | None:
        if self._mode == "tls" and not self._handshake_done:
            return self._handshake_since
        return super().receiving_since()

    def is_idle(self) -> bool:
        return (super().is_idle() and not self._raw_out
                and (self._mode != "tls" or self._handshake_done))

    def writable(self):
        return bool(self._raw_out) or super().writable()

    # ------------------------------------------------------------ reading
    def handle_read(self):
        if self._mode is None and not self._choose_mode():
            return
        if self._mode == "plain":
            return super().handle_read()
        try:
            raw = self.socket.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self.handle_close()
            return
        if not raw:
            self.handle_close()
            return
        self.last_activity = time.time()
        try:
            with self._tls_lock:
                self._incoming.write(raw)
                plain = self._pump()
                self._raw_out += self._outgoing.read()
                self._send_raw()
        except (ssl.SSLError, OSError) as e:
            log.debug("TLS connection failed", extra={"client": self.addr[0], "error": str(e)})
            self._drop()
            return
        if plain:
            self.received(plain)

    def _choose_mode(self) -> bool:
        try:
            first = self.socket.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            self.handle_close()
            return False
        if not first:
            self.handle_close()
            return False
        if first[0] == HANDSHAKE_BYTE:
            self._mode = "tls"
            self._handshake_since = time.monotonic()
            self._tls = self.certs.context().wrap_bio(self._incoming, self._outgoing,
                                                      server_side=True)
        else:
            self._mode = "plain"
            self.url_scheme = "http"
            self.parser_class = _with_scheme(self.parser_class, "http")
        return True

    def _pump(self) -> bytes:
        """Advance the handshake, then take every byte of plaintext there is."""
        if not self._handshake_done:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self._handshake_done = True
        chunks = []
        while True:
            try:
                data = self._tls.read(RECV_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the client's close_notify
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    # ------------------------------------------------------------ writing
    def _send_raw(self) -> None:
        """Write what the socket takes of _raw_out (never blocks)."""
        while self._raw_out:
            try:
                n = self.socket.send(self._raw_out)
            except (BlockingIOError, InterruptedError):
                return
            if n <= 0:
                return
            del self._raw_out[:n]
            self.last_activity = time.time()

    def handle_write(self):
        if self._mode == "tls" and self._raw_out:
            try:
                with self._tls_lock:
                    self._send_raw()
            except OSError:
                self._drop()
                return
        super().handle_write()

    def send(self, data, do_close=True):
        """waitress's send: plaintext in, the number of its bytes sent out. A
        record the socket has not fully taken is finished first, and the bytes
        it carried are reported once it has (waitress offers the same bytes
        again until send says they left)."""
        if self._mode != "tls":
            return super().send(data, do_close)
        if self._tls is None:  # dropped
            return 0
        try:
            with self._tls_lock:
                self._send_raw()
                if self._raw_out:
                    return 0
                if self._in_flight:
                    done, self._in_flight = self._in_flight, 0
                    return done
                chunk = bytes(data[:TLS_RECORD])
                self._tls.write(chunk)
                self._raw_out += self._outgoing.read()
                self._send_raw()
                if self._raw_out:
                    self._in_flight = len(chunk)
                    return 0
                return len(chunk)
        except (ssl.SSLError, OSError):
            if do_close:
                self._drop()
            return 0

    # ------------------------------------------------------------ closing
    def handle_close(self):
        if self._mode == "tls" and self._tls is not None and self.socket is not None:
            try:
                with self._tls_lock:
                    try:
                        self._tls.unwrap()  # queues our close_notify
                    except (ssl.SSLWantReadError, ssl.SSLError):
                        pass
                    self._raw_out += self._outgoing.read()
                    self._send_raw()
            except OSError:
                pass
        super().handle_close()

    def _drop(self) -> None:
        self._raw_out.clear()
        self._tls = None
        super().handle_close()

    def force_close(self) -> None:
        self._drop()


def _with_scheme(factory, scheme: str):
    kw = dict(factory.keywords)
    kw["url_scheme"] = scheme
    return type(factory)(factory.func, *factory.args, **kw)


def tls_channel(certs: CertSource) -> type[TlsChannel]:
    """The channel class of a server serving `certs`."""
    return type("TlsChannelWithCerts", (TlsChannel,), {"certs": certs})


def https_only(app, hsts_seconds: int):
    """`app` on HTTPS (with HSTS when hsts_seconds > 0); a request that came over
    plain HTTP is redirected to the same host, port and path over https."""
    hsts = [("Strict-Transport-Security", f"max-age={hsts_seconds}")] if hsts_seconds else []

    def wrapped(environ, start_response):
        if environ.get("wsgi.url_scheme") != "https":
            location = redirect_target(environ)
            body = f"This page is served over HTTPS: {location}\n".encode()
            method = environ.get("REQUEST_METHOD", "GET")
            status = ("301 Moved Permanently" if method in ("GET", "HEAD")
                      else "308 Permanent Redirect")
            start_response(status, [("Location", location), ("Content-Type", "text/plain"),
                                    ("Content-Length", str(len(body)))])
            return [] if method == "HEAD" else [body]
        if not hsts:
            return app(environ, start_response)

        def with_hsts(status, headers, exc_info=None):
            return start_response(status, [*headers, *hsts], exc_info)

        return app(environ, with_hsts)

    return wrapped


def redirect_target(environ) -> str:
    """https://<the host and port the client asked for><path>?<query>: the same
    port, as the client sees it (a port forward may stand between); without a port
    in Host, this server's. A Host header that is not a plain host name or address
    gives way to ours."""
    host = environ.get("HTTP_HOST", "")
    m = _HOST.match(host)
    name = m.group(1) if m else environ.get("SERVER_NAME", "localhost")
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    port = (m.group(2) or "")[1:] if m else ""
    port = port or str(environ.get("SERVER_PORT", "443"))
    netloc = name if port == "443" else f"{name}:{port}"
    raw_path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/"
    path = quote(raw_path.encode("latin-1", "replace"), safe="/;:@&=+$,!~*'()-._")
    query = environ.get("QUERY_STRING", "")
    return f"https://{netloc}{path}" + (f"?{query}" if query else "")
