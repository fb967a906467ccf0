"""waitress with limits a hostile client cannot talk its way around: the HTTP server
under HTTP boot and the admin web UI.

Stock waitress buffers a request body up to 1 GiB before the application sees it,
keeps an idle connection for 120 s, and at its connection limit stops accepting,
so a few hundred idle or dribbling connections lock everyone out. Here:

- a request body larger than its path's limit (`Limits.body_limit`) is refused
  with 413 as soon as its headers have arrived (Content-Length) or as soon as the
  chunked body passes the limit: the body is never read, the connection closes;
- a connection with nothing in flight is closed after `idle_timeout` seconds;
- a request (headers and body) must arrive within `request_timeout` seconds of
  its first byte (slow-loris: headers dribbled a byte at a time);
- at `max_connections`, a new connection closes the idlest idle one instead of
  waiting behind them; a client address holding `max_per_client` connections
  loses its own idlest one (or the new one, if none of its connections is idle); an
  IPv6 client is its /64 (`netservices.listen.client_group`);
- poll() instead of select(), which cannot watch a descriptor above 1023.

`create_server` builds one waitress server per listening socket over a shared
I/O loop, as waitress's own `create_server` does, with the channel class given
(HTTP boot's zero-copy channel, the admin UI's TLS channel, or waitress's own).
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import RequestEntityTooLarge

from .listen import client_group

log = logging.getLogger("nixie.http")

MAINTENANCE_SECONDS = 1  # how often idle and slow connections are looked for


@dataclass(frozen=True)
class Limits:
    """What one client may cost the server."""

    max_body: int = 64 * 1024  # bytes, any path not in body_by_prefix
    body_by_prefix: tuple[tuple[str, int], ...] = ()  # (path prefix, bytes), first match wins
    idle_timeout: int = 30  # seconds a connection with nothing in flight is kept
    request_timeout: int = 30  # seconds from a request's first byte to its last
    max_connections: int = 256  # per server process
    max_per_client: int = 64  # per client address

    def body_limit(self, path: str) -> int:
        for prefix, limit in self.body_by_prefix:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return limit
        return self.max_body


class LimitedParser(HTTPRequestParser):
    """waitress's request parser, refusing a body over its path's limit before
    reading it, and remembering when the request's first byte came."""

    def __init__(self, adj, limits: Limits, url_scheme: str | None = None):
        super().__init__(adj)
        self.limits = limits
        self.scheme = url_scheme
        self.started = time.monotonic()

    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        if self.scheme:
            self.url_scheme = self.scheme
        limit = self.limits.body_limit(self.path or "/")
        if self.content_length > limit:
            self._too_large(limit)

    def received(self, data):
        n = super().received(data)
        if (self.body_rcv is not None and not self.completed
                and self.body_bytes_received > self.limits.body_limit(self.path or "/")):
            self._too_large(self.limits.body_limit(self.path or "/"))  # chunked
        return n

    def _too_large(self, limit: int) -> None:
        self.error = RequestEntityTooLarge(f"the body of a request to this path may have "
                                           f"at most {limit} bytes")
        self.completed = True


class GuardedChannel(HTTPChannel):
    """waitress's channel with a `LimitedParser`; the base of every channel
    `create_server` takes (mix it in first)."""

    url_scheme: str | None = None  # None: waitress's (adj.url_scheme)

    def __init__(self, server, sock, addr, adj, map=None):
        # who it counts against (an IPv6 client is its /64): worked out once, read per accept
        self.client = client_group(addr[0] if isinstance(addr, tuple) else str(addr))
        super().__init__(server, sock, addr, adj, map)
        self.parser_class = functools.partial(LimitedParser, limits=server.limits,
                                              url_scheme=self.url_scheme)

    def receiving_since(self) -> float | None:
        """monotonic() of the first byte of a request still arriving; None when none is."""
        req = self.request
        return req.started if req is not None and not req.completed else None

    def is_idle(self) -> bool:
        """Nothing in flight: no request arriving, running or being answered."""
        return (self.connected and not self.requests and self.request is None
                and not self.total_outbufs_len and not self.will_close)

    def force_close(self) -> None:
        self.handle_close()


class GuardedServer(TcpWSGIServer):
    """One listening socket of a `create_server` server."""

    limits: Limits = Limits()
    _last_full_warning = 0.0

    def maintenance(self, now):
        """Idle connections past idle_timeout and requests past request_timeout
        are closed (waitress's own check only knows idleness, and a dribbling
        client is never idle)."""
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            since = channel.receiving_since()
            if since is not None and mono - since > self.limits.request_timeout:
                log.info("closing a connection whose request is too slow",
                         extra={"client": _client(channel)})
                channel.force_close()
            elif not channel.requests and channel.last_activity < now - self.limits.idle_timeout:
                channel.will_close = True

    def readable(self):
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return self.accepting

    def _channels(self) -> list[GuardedChannel]:
        return [c for c in self._map.values() if isinstance(c, GuardedChannel) and c.connected]

    def handle_accept(self):
        try:
            pair = self.accept()
            if pair is None:
                return
            conn, addr = pair
            self.set_socket_options(conn)
        except OSError:
            return  # the client left before we took it, or out of descriptors
        addr = self.fix_addr(addr)
        if not self._make_room(addr):
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def _make_room(self, addr) -> bool:
        """Room for one more connection from `addr`: close an idle one if a limit
        is reached. False: no room (every connection in the way is busy)."""
        channels = self._channels()
        host = client_group(addr[0] if isinstance(addr, tuple) else str(addr))
        own = [c for c in channels if _client(c) == host]
        if len(own) >= self.limits.max_per_client and not _close_idlest(own):
            self._warn_full("a client reached its connection limit", host)
            return False
        if len(channels) >= self.limits.max_connections and not _close_idlest(channels):
            self._warn_full("every connection is busy", host)
            return False
        return True

    def _warn_full(self, why: str, host) -> None:
        now = time.monotonic()
        if now - self._last_full_warning > 10:
            self._last_full_warning = now
            log.warning(f"refusing a connection: {why}", extra={"client": host})


def _client(channel) -> str:
    """The client a connection counts against (netservices.listen.client_group: an IPv6
    client is its /64)."""
    return channel.client


def _close_idlest(channels: list[GuardedChannel]) -> bool:
    idle = [c for c in channels if c.is_idle()]
    if not idle:
        return False
    min(idle, key=lambda c: c.last_activity).force_close()
    return True


def create_server(app: Callable, *, limits: Limits, channel_class: type[GuardedChannel],
                  sockets: list[socket.socket] | None = None, listen: str | None = None,
                  threads: int = 4, ident: str = "nixie", **adjustments):
    """A waitress server for `app` on bound `sockets` (or on `listen`, one
    "HOST:PORT ..." string), every connection a `channel_class` under `limits`.
    Returns an object with run(), close(), task_dispatcher (and, for one socket,
    the socket)."""
    largest = max([limits.max_body, *(n for _, n in limits.body_by_prefix)])
    kw = dict(threads=threads, ident=ident, asyncore_loop_timeout=1, asyncore_use_poll=True,
              channel_timeout=limits.idle_timeout, cleanup_interval=MAINTENANCE_SECONDS,
              connection_limit=limits.max_connections + 16,
              max_request_body_size=largest + 1, **adjustments)
    if sockets is not None:
        kw["sockets"] = sockets
    else:
        kw["listen"] = listen
    adj = Adjustments(**kw)
    server_class = type("LimitedServer", (GuardedServer,),
                        {"limits": limits, "channel_class": channel_class})
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    shared: dict = {}
    if adj.sockets:
        infos = [(s.family, s.type, s.proto, s.getsockname()) for s in adj.sockets]
        servers = [server_class(app, shared, True, s, dispatcher=dispatcher, adj=adj,
                                bind_socket=False, sockinfo=info)
                   for s, info in zip(adj.sockets, infos, strict=True)]
    else:
        servers = [server_class(app, shared, True, None, dispatcher=dispatcher, adj=adj,
                                sockinfo=info) for info in adj.listen]
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(shared, adj, [(s.effective_host, s.effective_port) for s in servers],
                             dispatcher, servers[-1].log_info)
