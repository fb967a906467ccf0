"""Secrets kept in files under the state dir (the session signing key, the
one-time setup code): written whole or not at all, 0600, and refused when what
is on disk cannot be the secret that was written.

A write goes to a temporary file in the same directory, is fsynced, and is then
linked to its name (a link, unlike a rename, never replaces a file another
process made first) and the directory fsynced; a crash or a full disk leaves
the old state (no file, or the whole secret), never a short file under the
secret's name.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from appliance.errors import ConfigError

SESSION_KEY_BYTES = 32


def write_new(path: Path, data: bytes) -> bool:
    """Write `data` to `path` (0600) atomically unless `path` exists.

    True when this call made the file; False when it was already there (its
    content is then whatever the first writer wrote, whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def session_key(path: Path, *, key: str = "web.secret_key_file") -> bytes:
    """The session signing key in `path`, made (32 random bytes, 0600) when the
    file does not exist. Raises ConfigError when the file holds fewer than 32
    bytes (an empty or cut-short file, e.g. after a crash or a full disk on an
    older version): signing sessions with it would let anyone forge them."""
    path = Path(path)
    if not path.exists():
        write_new(path, secrets.token_bytes(SESSION_KEY_BYTES))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(key, f"cannot read the session signing key {path}: {e.strerror}") from None
    if len(data) < SESSION_KEY_BYTES:
        raise ConfigError(key, f"the session signing key {path} holds {len(data)} bytes, fewer than "
                               f"{SESSION_KEY_BYTES}: it is empty or cut short (a crash or a full "
                               "disk?); refusing to sign sessions with it. Delete the file and "
                               "start again to make a new key (everyone logs in again)")
    return data
