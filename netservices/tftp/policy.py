"""TFTP policy as plain functions: which file a request may read, which options we accept."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .codec import ERR_ACCESS, ERR_ILLEGAL, ERR_NOT_FOUND

MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464
DEFAULT_BLKSIZE = 512
MAX_WINDOWSIZE = 64
DEFAULT_TIMEOUT = 2.0
# The longest retransmission timeout a client may ask for (RFC 2349 allows 255 s; a
# request asking more gets no `timeout` in the OACK and the default applies): a silent
# client must not hold a transfer slot for minutes.
MAX_TIMEOUT = 5


class Refused(Exception):
    """A request we answer with a TFTP error packet."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def resolve_path(root: str, filename: str) -> str:
    """The real path of `filename` under `root`, or Refused.

    Refuses absolute names, any `..` component, backslashes, NUL and control
    characters, and names (or symlinks) whose real path leaves the root."""
    if not filename or any(c in filename for c in "\0\\") or any(ord(c) < 32 for c in filename):
        raise Refused(ERR_ACCESS, "illegal file name")
    if filename.startswith("/"):
        raise Refused(ERR_ACCESS, "absolute paths are not served")
    parts = filename.split("/")
    if ".." in parts:
        raise Refused(ERR_ACCESS, "'..' is not allowed")
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, *[p for p in parts if p not in ("", ".")]))
    if target != real_root and not target.startswith(real_root + os.sep):
        raise Refused(ERR_ACCESS, "path leads outside the TFTP root")
    if not os.path.isfile(target):
        raise Refused(ERR_NOT_FOUND, "file not found")
    return target


@dataclass(frozen=True)
class Negotiated:
    blksize: int = DEFAULT_BLKSIZE
    timeout: float = DEFAULT_TIMEOUT
    windowsize: int = 1
    oack: dict[str, str] | None = None  # None: no OACK, start with DATA 1


def negotiate(options: dict[str, str], size: int, max_blksize: int = MAX_BLKSIZE) -> Negotiated:
    """Accept blksize, tsize, timeout (up to MAX_TIMEOUT) and windowsize (clamped to what
    we allow); ignore options we do not know or values we refuse, as RFC 2347 says."""
    blksize, timeout, windowsize = DEFAULT_BLKSIZE, DEFAULT_TIMEOUT, 1
    ack: dict[str, str] = {}
    for name, value in options.items():
        try:
            n = int(value)
        except ValueError:
            continue
        if name == "blksize":
            if n < MIN_BLKSIZE:
                continue
            blksize = min(n, max_blksize)
            ack["blksize"] = str(blksize)
        elif name == "tsize":
            ack["tsize"] = str(size)
        elif name == "timeout":
            if 1 <= n <= MAX_TIMEOUT:
                timeout = float(n)
                ack["timeout"] = str(n)
        elif name == "windowsize":
            if n >= 1:
                windowsize = min(n, MAX_WINDOWSIZE)
                ack["windowsize"] = str(windowsize)
    return Negotiated(blksize, timeout, windowsize, ack or None)


def check_mode(mode: str) -> None:
    """Only octet: boot files are binary, and netascii would change their size."""
    if mode.lower() != "octet":
        raise Refused(ERR_ILLEGAL, f"mode {mode!r} is not supported; use octet")
