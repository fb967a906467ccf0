"""The TFTP server loop: read-only, many transfers in one epoll loop.

Every transfer has its own UDP socket (its TID) connected to the client, so the
kernel delivers only that client's packets to it. Nothing blocks: a stuck or
vanished client just times out (or gets ICMP-refused) while the others keep
going. File contents are read once per (inode, mtime) and handed to `sendmsg`
as memoryview slices, so a DATA packet is a 4-byte header plus a slice of
bytes already in memory.

Busy polling: in a lock-step transfer the server waits one round trip per block.
Sleeping in epoll through that wait costs a wake-up per block, and on a machine
whose cores go idle (a VM's vCPU halts) that wake-up is an inter-processor
interrupt and tens of microseconds. So while transfers are active, the loop polls
without sleeping for up to `busy_poll_us` before it blocks, the way Linux's
net.core.busy_poll does for sockets: a single client's ACK usually lands inside
that window. It spins only while a transfer is active and never longer than that
per wait, and it runs in a process of its own (nixie serve runs TFTP in worker
processes), so it takes no lock another service needs.

A request costs little and its source address may be forged, so what one can make
the server do is bounded: a transfer that has never heard from its client (no
valid ACK, not even of the OACK) is sent at most `UNHEARD_SENDS` times in all (its
first DATA or OACK and two resends, within about two seconds; no ERROR at the end)
and then dropped; a client address may have `MAX_PER_CLIENT` transfers at a time
in a worker (more requests are dropped unanswered); and when every slot is taken, the
oldest transfer that never heard from its client makes room for a new request.
Negotiated timeouts are capped (`policy.MAX_TIMEOUT`).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..listen import parse_listen
from . import codec, policy
from .codec import MalformedPacket
from .policy import Refused

log = logging.getLogger("nixie.tftp")

MAX_RETRIES = 6
UNHEARD_SENDS = 3  # first send + 2 resends for a transfer whose client never answered
MAX_PER_CLIENT = 8  # transfers at a time per client address (per worker)
# Retransmission: the first resend comes after FIRST_RTO (a LAN answers in well
# under a millisecond), then the wait doubles up to the negotiated timeout, so
# one lost packet costs a fraction of a second, not the client's 6 s timeout.
FIRST_RTO = 0.25
MAX_TRANSFERS = 1024
SCAN_INTERVAL = 0.1
_DATA_HDR = struct.Struct("!HH")
# Whole DATA packets are kept for files up to this size, for a few block sizes each
# (a client picks the block size: memory must not grow with what clients ask for).
PACKETS_MAX_FILE = 8 << 20
PACKETS_MAX_VARIANTS = 4
# A client sends ACKs (4 bytes) and ERRORs during a transfer; the opcode decides, so
# a longer datagram may be cut here (a small buffer stays in Python's own allocator).
RECV_SIZE = 256
# how long the loop polls without sleeping, while transfers are active (see above)
BUSY_POLL_US = 100
# events per epoll wait: Python allocates room for this many on every call (the
# default, 1023, is a 12 KB malloc per packet in a lock-step transfer)
POLL_MAX_EVENTS = 64


def bind_listeners(listen: list[str]) -> list[tuple[socket.socket, str]]:
    """A non-blocking UDP socket bound to each `listen` address, with its host."""
    out: list[tuple[socket.socket, str]] = []
    try:
        for addr in listen:
            family, host, port = parse_listen(addr)
            s = socket.socket(family, socket.SOCK_DGRAM)
            out.append((s, host))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((host, port))
            s.setblocking(False)
    except OSError:
        for s, _ in out:
            s.close()
        raise
    return out


@dataclass
class _File:
    key: tuple[int, int, int, int]
    size: int
    view: Any  # memoryview of a snapshot, or a PreadView
    # whole DATA packets by blksize (snapshots only): packets[i] carries block i + 1
    packets: dict[int, list[bytes]] = field(default_factory=dict)

    def data_packets(self, blksize: int) -> list[bytes] | None:
        """Every DATA packet of the file at `blksize`, built on first use: a block then
        costs one send of bytes already in memory. None for files read with pread."""
        if not isinstance(self.view, memoryview) or self.size > PACKETS_MAX_FILE:
            return None
        pkts = self.packets.get(blksize)
        if pkts is None:
            if len(self.packets) >= PACKETS_MAX_VARIANTS:
                return None  # clients asking for many block sizes get the slicing path
            view, pack = self.view, _DATA_HDR.pack
            pkts = [pack(3, (i + 1) & 0xFFFF) + view[i * blksize:(i + 1) * blksize]
                    for i in range(self.size // blksize + 1)]
            self.packets[blksize] = pkts
        return pkts


class PreadView:
    """Slices of a large file read with pread (for files too big to snapshot)."""

    def __init__(self, path: str, size: int):
        self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(self.size)
        return os.pread(self.fd, max(0, stop - start), start)

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


class FileCache:
    """File contents by (device, inode, size, mtime); a changed file is read again.

    Files up to SNAPSHOT_MAX are held as bytes (the iPXE binaries are ~1 MB), so a
    file rewritten in place mid-transfer cannot hurt a transfer (with mmap it
    would be a SIGBUS); larger ones are read block by block with pread."""

    SNAPSHOT_MAX = 32 << 20

    def __init__(self, limit_bytes: int = 256 << 20):
        self.limit_bytes = limit_bytes
        self.files: dict[str, _File] = {}

    def get(self, path: str) -> _File:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        f = self.files.get(path)
        if f is not None and f.key == key:
            return f
        if st.st_size > self.SNAPSHOT_MAX:
            return _File(key, st.st_size, PreadView(path, st.st_size))  # not cached
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(st.st_size + 1)
        finally:
            os.close(fd)
        f = _File(key, len(data), memoryview(data))
        self.files.pop(path, None)
        while self.files and sum(x.size * (1 + len(x.packets)) for x in self.files.values()) \
                + f.size > self.limit_bytes:
            self.files.pop(next(iter(self.files)))  # oldest; live transfers keep their view
        self.files[path] = f
        return f


class Transfer:
    """One read transfer. Block numbers are absolute here; the wire wraps at 65536."""

    __slots__ = ("sock", "peer", "path", "name", "view", "size", "blksize", "window",
                 "timeout", "oack", "nblocks", "acked", "sent_upto", "retries", "deadline", "rto",
                 "started", "fd", "recv", "sendmsg", "send", "expect", "packets", "heard")

    def __init__(self, sock: socket.socket, peer: tuple, path: str, name: str, view: memoryview,
                 neg: policy.Negotiated, packets: list[bytes] | None = None):
        self.sock = sock
        self.fd = sock.fileno()
        self.recv = sock.recv
        self.sendmsg = sock.sendmsg
        self.send = sock.send
        self.packets = packets  # whole DATA packets (see _File.data_packets), or None
        self.expect: bytes | None = None
        self.peer = peer
        self.path = path
        self.name = name
        self.view = view
        self.size = len(view)
        self.blksize = neg.blksize
        self.window = neg.windowsize
        self.timeout = neg.timeout
        self.rto = min(FIRST_RTO, neg.timeout)
        self.oack = codec.encode_oack(neg.oack) if neg.oack else None
        self.nblocks = self.size // self.blksize + 1  # the last block is short (maybe empty)
        self.acked = 0  # every block <= acked is acknowledged (0: OACK or nothing)
        self.sent_upto = 0
        self.retries = 0
        self.deadline = 0.0
        self.started = time.monotonic()
        self.heard = False  # a valid ACK came back: the client is real and listening

    def send_window(self, now: float, resend: bool = True) -> int:
        """Send the blocks after `acked` that fit in the window (only the ones not
        sent yet unless `resend`); returns bytes sent."""
        if self.oack is not None:
            self.sock.send(self.oack)
            self.deadline = now + self.rto
            self.expect = None
            return 0
        sent = 0
        first = self.acked + 1 if resend else max(self.acked, self.sent_upto) + 1
        last = min(self.acked + self.window, self.nblocks)
        bs, view, sendmsg, pack, pkts = (self.blksize, self.view, self.sock.sendmsg,
                                         _DATA_HDR.pack, self.packets)
        for blk in range(first, last + 1):
            try:
                if pkts is not None:
                    sent += self.send(pkts[blk - 1]) - 4
                else:
                    off = (blk - 1) * bs
                    chunk = view[off:off + bs]
                    sendmsg((pack(3, blk & 0xFFFF), chunk))
                    sent += len(chunk)
            except BlockingIOError:
                break  # the socket buffer is full: the timeout resends
            self.sent_upto = blk
        self.deadline = now + self.rto
        # lock-step: the one packet that moves this transfer on (see the loop)
        self.expect = (_DATA_HDR.pack(4, self.sent_upto & 0xFFFF)
                       if self.window == 1 and self.sent_upto == self.acked + 1 else None)
        return sent

    def on_ack(self, wire_block: int) -> bool:
        """Apply an ACK; True if the window moved (the caller sends more)."""
        if self.oack is not None:
            if wire_block == 0:
                self.oack = None
                self.heard = True
                self.progress()
                return True
            return False
        delta = (wire_block - self.acked) & 0xFFFF
        if delta == 0:
            # a duplicate ACK: with a window it asks for a resend; without, ignore
            # it (answering would start the Sorcerer's Apprentice).
            if self.window > 1:
                self.sent_upto = self.acked
                return True
            return False
        if self.acked + delta > self.sent_upto:
            return False  # an ACK for something never sent
        self.acked += delta
        self.heard = True
        self.progress()
        return True

    def progress(self) -> None:
        if self.retries:
            self.retries = 0
            self.rto = min(FIRST_RTO, self.timeout)

    @property
    def done(self) -> bool:
        return self.oack is None and self.acked >= self.nblocks


class TftpServer:
    """Serves files under `root` on every `listen` address until stopped."""

    def __init__(self, root: str, listen: list[str], events=None,
                 max_blksize: int = policy.MAX_BLKSIZE, max_transfers: int = MAX_TRANSFERS,
                 listen_sockets: list[tuple[socket.socket, str]] | None = None,
                 requests_per_wake: int = 64, busy_poll_us: int = 0):
        self.root = str(root)
        self.listen = list(listen)
        # the sink of boot events; the host is added by the pool (workers.py), which
        # has the backend
        self.events = events
        self.max_blksize = max_blksize
        self.max_transfers = max_transfers
        # sockets bound by someone else (a worker gets its parent's), shared with
        # sibling loops: then take one request per wake-up and leave the rest to them
        self.listen_sockets = listen_sockets
        self.requests_per_wake = requests_per_wake
        self.busy_poll = max(0, busy_poll_us) / 1e6  # seconds
        self.counters: Counter[str] = Counter()
        self.bytes_sent = 0
        self.files = FileCache()
        self.transfers: dict[int, Transfer] = {}
        self.per_client: Counter[str] = Counter()  # client address -> transfers
        self.listeners: dict[int, tuple[socket.socket, str]] = {}
        self._ep: select.epoll | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stopping = False
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._event_thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def bind(self) -> None:
        ep = select.epoll()
        for s, host in self.listen_sockets or bind_listeners(self.listen):
            self.listeners[s.fileno()] = (s, host)
            ep.register(s.fileno(), select.EPOLLIN)
        ep.register(self._wake_r, select.EPOLLIN)
        self._ep = ep

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s, _ in self.listeners.values()]

    def serve(self, stop: threading.Event | None = None) -> None:
        if self._ep is None:
            self.bind()
        if self.events is not None:
            self._event_thread = threading.Thread(target=self._event_loop, name="tftp-events",
                                                  daemon=True)
            self._event_thread.start()
        try:
            self._loop(stop)
        finally:
            self.close()

    def shutdown(self) -> None:
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        for t in list(self.transfers.values()):
            self._finish(t, "server stopping", ok=False, notify=False)
        for s, _ in self.listeners.values():
            s.close()
        self.listeners.clear()
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        self._events.put(None)
        if self._event_thread is not None:
            self._event_thread.join(timeout=2)

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "bytes_sent": self.bytes_sent, "active": len(self.transfers)}

    # ------------------------------------------------------------ the loop
    def _loop(self, stop: threading.Event | None) -> None:
        ep = self._ep
        assert ep is not None
        next_scan = time.monotonic() + SCAN_INTERVAL
        transfers, listeners = self.transfers, self.listeners
        pack = _DATA_HDR.pack
        busy, monotonic, counters = self.busy_poll, time.monotonic, self.counters
        while not self._stopping and not (stop is not None and stop.is_set()):
            spin = busy and transfers
            ready = ep.poll(0, POLL_MAX_EVENTS) if spin else None
            if spin and not ready:  # poll without sleeping for a while (see the top)
                counters["busy_polls"] += 1
                until = monotonic() + busy
                while not ready and monotonic() < until:
                    ready = ep.poll(0, POLL_MAX_EVENTS)
                if ready:
                    counters["busy_poll_hits"] += 1
            if not ready:
                ready = ep.poll(SCAN_INTERVAL, POLL_MAX_EVENTS)
            now = monotonic()
            for fd, _mask in ready:
                t = transfers.get(fd)
                if t is None:
                    if fd in listeners:
                        self._on_request_readable(*listeners[fd], now)
                    elif fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 64)
                        except BlockingIOError:
                            pass
                    continue
                # One datagram per readiness event: epoll is level-triggered, so a
                # second queued packet wakes us again.
                try:
                    data = t.recv(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # ICMP port unreachable: the client is gone
                    self._finish(t, "client went away", ok=False)
                    continue
                # The hot path, lock-step (windowsize 1): `expect` is the exact ACK of
                # the block in flight; answer it with the next block. Anything else
                # (OACK phase, windows, duplicates, errors, junk): _on_packet.
                if data == t.expect:
                    blk = t.acked = t.sent_upto
                    t.heard = True
                    if t.retries:
                        t.progress()
                    if blk >= t.nblocks:
                        self._finish(t, "sent", ok=True)
                        continue
                    nxt = blk + 1
                    try:
                        if t.packets is not None:
                            t.send(t.packets[blk])
                        else:
                            bs = t.blksize
                            t.sendmsg((pack(3, nxt & 0xFFFF), t.view[blk * bs:blk * bs + bs]))
                    except BlockingIOError:
                        pass  # the timeout resends
                    except OSError:
                        self._finish(t, "client went away", ok=False)
                        continue
                    t.sent_upto = nxt
                    t.expect = pack(4, nxt & 0xFFFF)
                    t.deadline = now + t.rto
                    continue
                self._on_packet(t, data, now)
            if now >= next_scan:
                next_scan = now + SCAN_INTERVAL
                self._check_timeouts(now)

    def _on_request_readable(self, sock: socket.socket, host: str, now: float) -> None:
        for _ in range(self.requests_per_wake):
            try:
                data, peer = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.counters["packets_in"] += 1
            self._handle_request(data, peer, host, now)

    def _handle_request(self, data: bytes, peer: tuple, host: str, now: float) -> None:
        try:
            req = codec.parse_request(data)
        except MalformedPacket as e:
            self.counters["malformed"] += 1
            log.debug("malformed request dropped", extra={"peer": peer[0], "why": str(e)})
            return
        self.counters["requests"] += 1
        try:
            if req.write:
                raise Refused(codec.ERR_ACCESS, "this server is read-only")
            policy.check_mode(req.mode)
            if self.per_client[peer[0]] >= MAX_PER_CLIENT:
                self.counters["dropped_per_client"] += 1  # no answer: nothing to reflect
                return
            if len(self.transfers) >= self.max_transfers and not self._evict_unheard():
                raise Refused(codec.ERR_UNDEFINED, "server busy, try again")
            path = policy.resolve_path(self.root, req.filename)
            try:
                f = self.files.get(path)
            except OSError:
                raise Refused(codec.ERR_ACCESS, "cannot read file") from None
        except Refused as r:
            self.counters["refused"] += 1
            self._reply_error(host, peer, r.code, r.message)
            self._emit("boot.tftp", f"refused {req.filename[:200]!r}: {r.message}", peer[0],
                       level="warning", data={"file": req.filename[:200], "status": "refused"})
            return
        neg = policy.negotiate(req.options, f.size, self.max_blksize)
        try:
            s = self._transfer_socket(host, peer)
        except OSError as e:
            self.counters["socket_errors"] += 1
            log.warning("cannot open a transfer socket", extra={"error": str(e)})
            return
        t = Transfer(s, peer, path, req.filename, f.view, neg, f.data_packets(neg.blksize))
        self.transfers[t.fd] = t
        self.per_client[peer[0]] += 1
        self._ep.register(t.fd, select.EPOLLIN)
        self.counters["transfers"] += 1
        try:
            t.send_window(now)
        except OSError:
            self._finish(t, "client unreachable", ok=False)

    def _evict_unheard(self) -> bool:
        """Every slot is taken: drop the oldest transfer that never heard from its client
        (a forged or silent request), if there is one."""
        unheard = [t for t in self.transfers.values() if not t.heard]
        if not unheard:
            return False
        self.counters["evicted_unheard"] += 1
        self._finish(min(unheard, key=lambda t: t.started), "no answer from the client",
                     ok=False, notify=False)
        return True

    def _transfer_socket(self, host: str, peer: tuple) -> socket.socket:
        family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.bind((host, 0))
            s.connect(peer[:2])
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    def _reply_error(self, host: str, peer: tuple, code: int, message: str) -> None:
        # errors come from a fresh TID, as a transfer's would
        try:
            s = self._transfer_socket(host, peer)
        except OSError:
            return
        try:
            s.send(codec.encode_error(code, message))
        except OSError:
            pass
        finally:
            s.close()

    def _on_packet(self, t: Transfer, data: bytes, now: float) -> None:
        try:
            block = codec.parse_ack(data)
        except MalformedPacket:
            self.counters["malformed"] += 1
            return
        if block is None:  # the client sent ERROR: it aborts (e.g. after a tsize probe)
            self._finish(t, "client aborted", ok=False, aborted=True)
            return
        if not t.on_ack(block):
            return
        if t.done:
            self._finish(t, "sent", ok=True)
            return
        try:
            t.send_window(now, resend=False)
        except OSError:
            self._finish(t, "client went away", ok=False)

    def _check_timeouts(self, now: float) -> None:
        for t in [t for t in self.transfers.values() if t.deadline <= now]:
            t.retries += 1
            if not t.heard and t.retries >= UNHEARD_SENDS:
                # never answered: maybe a forged source address; stop reflecting at it
                self.counters["unheard"] += 1
                self._finish(t, "no answer from the client", ok=False)
                continue
            if t.retries > MAX_RETRIES:
                self.counters["timeouts"] += 1
                try:
                    t.sock.send(codec.encode_error(codec.ERR_UNDEFINED, "timed out"))
                except OSError:
                    pass
                self._finish(t, "timed out", ok=False)
                continue
            self.counters["retransmits"] += 1
            t.rto = min(t.rto * 2, t.timeout)
            try:
                t.send_window(now)
            except OSError:
                self._finish(t, "client went away", ok=False)

    def _finish(self, t: Transfer, why: str, ok: bool, aborted: bool = False,
                notify: bool = True) -> None:
        if self.transfers.pop(t.fd, None) is None:
            return
        ip = t.peer[0]
        self.per_client[ip] -= 1
        if self.per_client[ip] <= 0:
            del self.per_client[ip]
        try:
            if self._ep is not None:
                self._ep.unregister(t.fd)
        except (OSError, ValueError):
            pass
        t.sock.close()
        self.bytes_sent += min(t.acked * t.blksize, t.size)  # acknowledged bytes
        if ok:
            self.counters["completed"] += 1
        elif aborted:
            self.counters["aborted"] += 1
        else:
            self.counters["failed"] += 1
        if notify and not aborted:
            secs = time.monotonic() - t.started
            self._emit("boot.tftp", f"{t.name}: {why}", t.peer[0],
                       level="info" if ok else "warning",
                       data={"file": t.name, "status": "sent" if ok else "failed",
                             "bytes": t.size, "blksize": t.blksize,
                             "seconds": round(secs, 3)})

    # ------------------------------------------------------------ events
    def _emit(self, kind: str, message: str, ip: str, level: str = "info",
              data: dict | None = None) -> None:
        if self.events is not None:
            self._events.put((kind, message, ip, level, data))

    def _event_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            kind, message, ip, level, data = item
            try:
                self.events.event(kind, message, level=level, ip=ip, data=data)
            except Exception:  # noqa: BLE001 - a failing event sink must not stop TFTP
                log.warning("could not record a TFTP event", exc_info=True)
