"""Streaming artifacts (lists of file segments) without reading them into memory.

`SegmentStream` is a waitress `wsgi.file_wrapper` (a ReadOnlyFileBasedBuffer),
so waitress hands it straight to the connection's output instead of iterating
it in a worker thread. Two ways out of it:

- copy: `get()` preads a chunk and waitress `send()`s it (the file wrapper path);
- zero copy: `get()` returns a `FileRange`, and `SendfileChannel.send()` turns
  that into `os.sendfile()` from the file to the socket.

Range parsing is a pure function.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from waitress.buffers import OverflowableBuffer, ReadOnlyFileBasedBuffer
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.wasyncore import _DISCONNECTED

from ..backend import Segment

SENDFILE_CHUNK = 4 << 20
COPY_CHUNK = 1 << 20


# ------------------------------------------------------------------ Range
class Unsatisfiable(Exception):
    """A Range none of whose bytes exist (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as (start, length); None for no range, several
    ranges or a header we do not understand (serve the whole thing). Raises
    Unsatisfiable when the range starts past the end, or when its positions are
    not ASCII digits (`bytes=٣-`, `bytes=²-`: str.isdigit() says yes, int() may
    not, and no byte of the resource has such a position)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    if not spec.isascii():
        raise Unsatisfiable()
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not _ascii_digits(first, empty_ok=True) or not _ascii_digits(last, empty_ok=True):
        return None
    if not (first + last).isascii():
        raise Unsatisfiable()  # digits, but not 0-9 ("\u00b2" is a digit int() cannot read)
    if first == "":
        if last == "":
            return None
        n = min(int(last), size)
        if n == 0:  # bytes=-0, or any suffix of an empty resource
            raise Unsatisfiable()
        return size - n, n
    start = int(first)
    if start >= size:
        raise Unsatisfiable()
    end = size - 1 if last == "" else min(int(last), size - 1)
    if end < start:
        return None  # syntactically invalid: ignore
    return start, end - start + 1


def _ascii_digits(s: str, empty_ok: bool) -> bool:
    return (s == "" and empty_ok) or (s != "" and s.isascii() and s.isdigit())


# ------------------------------------------------------------------ segments
@dataclass(frozen=True)
class FileRange:
    """What `SegmentStream.get` hands waitress in zero-copy mode."""

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count


class SegmentStream(ReadOnlyFileBasedBuffer):
    """Bytes [start, start+length) of the concatenation of `segments`."""

    def __init__(self, segments: Sequence[Segment], start: int = 0, length: int | None = None,
                 zero_copy: bool = True, on_close: Callable[[int, int], None] | None = None):
        # not calling super().__init__: there is no single file object
        self.block_size = COPY_CHUNK
        self.zero_copy = zero_copy
        total = sum(s.length for s in segments)
        if length is None:
            length = total - start
        self.length = max(0, min(length, total - start))
        self.remain = self.length
        self.on_close = on_close
        self._fds: dict[str, int] = {}
        self._closed = False
        # (path, file offset, length) of what is left to send, first piece trimmed
        pieces, skip, want = [], start, self.length
        for s in segments:
            if want <= 0:
                break
            if skip >= s.length:
                skip -= s.length
                continue
            n = min(s.length - skip, want)
            pieces.append([s.path, s.offset + skip, n])
            want -= n
            skip = 0
        self._pieces = pieces
        self._i = 0

    # waitress's buffer interface ----------------------------------------
    def prepare(self, size=None):
        if size is not None:
            self.remain = min(self.remain, size)
        return self.remain

    def __len__(self):
        return self.remain

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def _current(self):
        while self._i < len(self._pieces) and self._pieces[self._i][2] == 0:
            self._i += 1
        return self._pieces[self._i] if self._i < len(self._pieces) else None

    def get(self, numbytes=-1, skip=False):
        piece = self._current()
        if piece is None or self.remain <= 0:
            return b""
        path, offset, left = piece
        if self.zero_copy and not skip:
            return FileRange(self._fd(path), offset, min(left, self.remain,
                                                         max(numbytes, SENDFILE_CHUNK)))
        n = min(left, self.remain, COPY_CHUNK if numbytes < 0 else max(numbytes, 1))
        data = os.pread(self._fd(path), n, offset)
        if len(data) < n:
            raise OSError(f"{path} is shorter than its segment")
        if skip:
            self.skip(len(data))
        return data

    def skip(self, numbytes, allow_prune=0):
        if numbytes > self.remain:
            raise ValueError("skipping past the end")
        self.remain -= numbytes
        while numbytes > 0:
            piece = self._current()
            n = min(numbytes, piece[2])
            piece[1] += n
            piece[2] -= n
            numbytes -= n

    def __iter__(self):
        return self

    def __next__(self):
        if self.remain <= 0:
            raise StopIteration
        saved, self.zero_copy = self.zero_copy, False
        try:
            return self.get(COPY_CHUNK, skip=True)
        finally:
            self.zero_copy = saved

    next = __next__

    def close(self):
        if self._closed:
            return
        self._closed = True
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self.on_close is not None:
            self.on_close(self.length - self.remain, self.length)

    def append(self, s):
        raise NotImplementedError


class SendfileChannel(HTTPChannel):
    """waitress's channel, plus: a `FileRange` chunk goes out with os.sendfile().

    Two changes to how a `SegmentStream` is flushed, so one I/O loop serves many
    downloads fairly: the task thread only queues it, and the I/O loop starts
    sending once that task has ended (stock waitress starts flushing from the
    task thread while holding the output lock; with a fast reader that flush
    runs for the whole file while the I/O loop spins on the lock); and each
    `handle_write` sends at most WRITE_BUDGET bytes before going back to select(). Both lean on waitress 3's channel internals
    (`outbufs`, `total_outbufs_len`, `current_outbuf_count`), as its own
    write_soon() does; pyproject pins waitress < 4."""

    WRITE_BUDGET = 8 << 20
    _budget = WRITE_BUDGET
    _stream_queued_by_task = False  # the I/O loop leaves the channel alone until the task ends

    def write_soon(self, data):
        if not isinstance(data, SegmentStream) or not data.zero_copy:
            return super().write_soon(data)
        if not self.connected:
            raise ClientDisconnected
        with self.outbuf_lock:
            self._flush_outbufs_below_high_watermark()  # the headers, a few hundred bytes
            if not self.connected:
                raise ClientDisconnected
            self._widen_send_buffer()
            self.outbufs.append(data)
            self.outbufs.append(OverflowableBuffer(self.adj.outbuf_overflow))
            self.current_outbuf_count = 0
            self.total_outbufs_len += len(data)
            self._stream_queued_by_task = True
        return len(data)

    SEND_BUFFER = 4 << 20

    def _widen_send_buffer(self):
        """A bigger socket send buffer lets each sendfile() move more per trip
        through select(). SO_SNDBUFFORCE (CAP_NET_ADMIN, which the router's unit
        has) passes net.core.wmem_max; without it, the plain option is capped."""
        sock = self.socket
        for opt in (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF):
            if opt is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self.SEND_BUFFER)
                return
            except OSError:
                continue

    def service(self):
        try:
            super().service()
        finally:
            if self._stream_queued_by_task:
                self._stream_queued_by_task = False
                self.server.pull_trigger()

    def writable(self):
        # while the task that queued a stream is finishing, the output lock is (or may
        # be) taken by it: trying to flush would spin on the lock and the GIL
        return not self._stream_queued_by_task and super().writable()

    def handle_write(self):
        self._budget = self.WRITE_BUDGET
        super().handle_write()

    def send(self, data, do_close=True):
        if type(data) is not FileRange:
            return super().send(data, do_close)
        if self._budget <= 0:
            return 0  # let the other connections have a turn; select() brings us back
        try:
            n = os.sendfile(self.socket.fileno(), data.fd, data.offset, data.count)
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.args[0] in _DISCONNECTED:
                if do_close:
                    self.handle_close()
                return 0
            raise
        if n == 0 and data.count > 0:
            # EOF inside a segment: the file shrank under us. An OSError makes
            # waitress close the connection instead of retrying a send forever.
            raise OSError(errno.EIO, "artifact file is shorter than its segment")
        self._budget -= n
        return n
