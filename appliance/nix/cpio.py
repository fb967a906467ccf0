"""The newc ("070701") CPIO format the Linux kernel unpacks as an initramfs.

Pure encoding: headers and padding as bytes; `walk_entries` turns a directory
tree into entries in a stable order. The kernel does not create missing parent
directories, so every archive of store paths must follow one that made `nix`
and `nix/store` (see `parents_archive`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
STORE_MTIME = 1  # what Nix sets every store file's mtime to


@dataclass(frozen=True)
class Entry:
    """One archive member: its name inside the archive and where its bytes come from."""

    name: str  # no leading slash, e.g. "nix/store/abc-foo/bin/foo"
    mode: int  # full st_mode (type bits + permissions)
    size: int  # bytes of data: file size, or symlink target length, 0 for dirs
    source: str | None = None  # file to read for regular files
    link_target: str | None = None  # for symlinks


def pad4(n: int) -> int:
    return (4 - n % 4) % 4


def header(name: str, mode: int, size: int, *, ino: int = 0, nlink: int = 1,
           mtime: int = STORE_MTIME, uid: int = 0, gid: int = 0, rdev: tuple[int, int] = (0, 0)
           ) -> bytes:
    """The 110-byte header plus the NUL-terminated, 4-aligned name."""
    raw = name.encode()
    if b"\0" in raw:
        raise ValueError(f"NUL byte in archive name {name!r}")
    namesize = len(raw) + 1
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    for v in fields:
        if not 0 <= v <= 0xFFFFFFFF:
            raise ValueError(f"cpio field out of range ({v}) for {name!r}")
    h = MAGIC + b"".join(b"%08X" % v for v in fields) + raw + b"\0"
    return h + b"\0" * pad4(len(h))


def trailer() -> bytes:
    return header(TRAILER, 0, 0, nlink=1)


def data_padding(size: int) -> bytes:
    return b"\0" * pad4(size)


def dir_entry(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm, 0)


def file_bytes_entry(name: str, data: bytes, perm: int = 0o444) -> tuple[Entry, bytes]:
    return Entry(name, stat.S_IFREG | perm, len(data)), data


def encode_bytes(entries: list[tuple[Entry, bytes | None]]) -> bytes:
    """A whole archive in memory (small archives: parents, registration)."""
    out = bytearray()
    for ino, (e, data) in enumerate(entries, start=1):
        out += header(e.name, e.mode, e.size, ino=ino, nlink=2 if stat.S_ISDIR(e.mode) else 1)
        if data:
            out += data + data_padding(len(data))
    out += trailer()
    return bytes(out)


def walk_entries(path: str, archive_name: str) -> Iterator[Entry]:
    """Entries for `path` (a store path: file, dir or symlink) named
    `archive_name` inside the archive, parents before children, sorted."""
    st = os.lstat(path)
    yield _entry(path, archive_name, st)
    if stat.S_ISDIR(st.st_mode):
        stack = [(path, archive_name)]
        while stack:
            d, n = stack.pop()
            with os.scandir(d) as it:
                children = sorted(it, key=lambda x: x.name)
            subdirs = []
            for c in children:
                cst = c.stat(follow_symlinks=False)
                yield _entry(c.path, f"{n}/{c.name}", cst)
                if stat.S_ISDIR(cst.st_mode):
                    subdirs.append((c.path, f"{n}/{c.name}"))
            stack.extend(reversed(subdirs))


def _entry(path: str, name: str, st: os.stat_result) -> Entry:
    m = st.st_mode
    if stat.S_ISREG(m):
        return Entry(name, stat.S_IFREG | (0o555 if m & 0o111 else 0o444), st.st_size, source=path)
    if stat.S_ISLNK(m):
        target = os.readlink(path)
        return Entry(name, stat.S_IFLNK | 0o777, len(target.encode()), link_target=target)
    if stat.S_ISDIR(m):
        return Entry(name, stat.S_IFDIR | 0o555, 0)
    raise ValueError(f"{path}: not a file, directory or symlink (a store path cannot hold it)")


def parse(data: bytes) -> list[tuple[str, int, bytes]]:
    """Decode one uncompressed newc archive: [(name, mode, data)] without the trailer.
    For tests and diagnostics; raises ValueError on malformed input."""
    out = []
    pos = 0
    while True:
        if data[pos:pos + 6] != MAGIC:
            raise ValueError(f"bad magic at offset {pos}")
        try:
            f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ValueError(f"bad header at offset {pos}") from None
        mode, size, namesize = f[1], f[6], f[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += pad4(pos)
        if name == TRAILER:
            return out
        body = data[pos:pos + size]
        if len(body) != size:
            raise ValueError(f"truncated data for {name}")
        pos += size + pad4(size)
        out.append((name, mode, body))
