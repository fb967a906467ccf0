"""Backup and restore of a router's state: one tar archive (gzip) of the state database and
every file under `state_dir` that is state.

What is in an archive:
- `nixie.db`: a copy made with SQLite's online backup API, consistent while `nixie serve`
  writes (hosts, generations, builds, users, API tokens, leases, events, the admin's settings);
- every regular file under `state_dir` (session key, setup code, TLS certificate and key,
  binary-cache signing key and signatures, flake credentials, BMC passwords, WireGuard keys,
  network transactions, build logs), with its mode; what is not state is left out
  (`EXCLUDED`: the database's own files, the CPIO cache, the TFTP root `serve` fills at start,
  the GC-root symlinks, which `appliance.nix.gc.reroot` makes again from the generations);
- `nixie-backup.json` last: the format, the schema version, the state directory it came from,
  and every file's size, mode and SHA-256.

A restore extracts into a new directory inside `state_dir` (same filesystem), checks every
member against the manifest, then renames what `state_dir` held aside
(`state_dir/.before-restore-<time>/`, never deleted) and the restored entries into place. It refuses, changing
nothing: an archive whose schema is newer than this program's, a running `serve`, and any
member that is not a plain file or directory, escapes the directory (`..`, absolute names),
is not in the manifest or does not match it, or would not fit on the disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from appliance.errors import Conflict, InvalidInput
from appliance.state.db import DB_MODE, SCHEMA_VERSION, STATE_DIR_MODE, connect, schema_version
from appliance.state.secretfile import fsync_dir
from appliance.state.status import running_status

FORMAT = 1
MANIFEST = "nixie-backup.json"
DB_NAME = "nixie.db"
# top-level names under state_dir that are not state (or are copied another way)
EXCLUDED = frozenset({"nixie.db", "nixie.db-wal", "nixie.db-shm", "nixie.db-journal",
                      "cpio-cache", "tftp", "gcroots"})
RESTORE_PREFIX = ".nixie-restore-"  # restores under way, staged uploads
PREVIOUS_PREFIX = ".before-restore-"  # what a restore moved aside
HIDDEN_PREFIXES = (RESTORE_PREFIX, PREVIOUS_PREFIX)  # never in a backup, never moved aside
KEPT_IN_PLACE = frozenset({"cpio-cache", "tftp"})  # caches a restore leaves where they are
RESTART_EXIT = 75  # serve's exit code when it stops to restore a staged backup
MAX_MEMBERS = 200_000
FREE_MARGIN_BYTES = 64 << 20  # a restore leaves at least this much free
# columns holding absolute paths under state_dir: rebased when restoring into another directory
PATH_COLUMNS = (("generations", "gc_root"), ("builds", "log_path"), ("vpn_peers", "key_file"))


@dataclass
class BackupResult:
    path: str
    size: int
    schema_version: int
    files: int
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "schema_version": self.schema_version,
                "files": self.files, "skipped": self.skipped}


@dataclass
class RestoreResult:
    state_dir: str
    schema_version: int
    files: int
    previous: str | None
    from_state_dir: str

    def to_dict(self) -> dict[str, Any]:
        return {"state_dir": self.state_dir, "schema_version": self.schema_version,
                "files": self.files, "previous": self.previous,
                "from_state_dir": self.from_state_dir}


class _HashingReader(io.RawIOBase):
    """Reads exactly `size` bytes of `f`, hashing them (a log growing meanwhile is cut at the
    size the archive header already holds)."""

    def __init__(self, f: IO[bytes], size: int):
        self.f, self.left, self.sha = f, size, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        if len(data) < n:
            raise OSError("file shrank while being archived")
        self.left -= len(data)
        self.sha.update(data)
        return data


def _state_files(state_dir: Path) -> tuple[list[Path], list[Path], list[str]]:
    """(directories, regular files, skipped names) under state_dir that are state."""
    dirs: list[Path] = []
    files: list[Path] = []
    skipped: list[str] = []
    for root, dnames, fnames in os.walk(state_dir):
        rel_root = Path(root).relative_to(state_dir)
        if rel_root == Path("."):
            dnames[:] = [d for d in dnames if d not in EXCLUDED and not d.startswith(HIDDEN_PREFIXES)]
            fnames = [f for f in fnames if f not in EXCLUDED and not f.startswith(HIDDEN_PREFIXES)]
        links = {d for d in dnames if (Path(root) / d).is_symlink()}  # never followed
        for d in sorted(dnames):
            if d in links:
                skipped.append(str(rel_root / d))
            else:
                dirs.append(Path(root) / d)
        dnames[:] = [d for d in dnames if d not in links]
        for f in sorted(fnames):
            p = Path(root) / f
            st = p.lstat()
            if stat.S_ISREG(st.st_mode) and not f.endswith(".tmp"):
                files.append(p)
            else:
                skipped.append(str(rel_root / f))
    return dirs, files, skipped


def _copy_db(db_path: Path, dest: Path) -> int:
    """SQLite's online backup of the live database into `dest` (0600); its schema version."""
    src = sqlite3.connect(str(db_path), timeout=10)
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_MODE)
        os.close(fd)
        dst = sqlite3.connect(str(dest))
        try:
            src.backup(dst)
            version = dst.execute("PRAGMA user_version").fetchone()[0]
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    return version


def backup(state_dir: str | os.PathLike[str], out: str | os.PathLike[str] | IO[bytes]) -> BackupResult:
    """Write the archive of `state_dir` to `out` (a path, written atomically 0600, or a binary
    file object). Safe while `nixie serve` runs."""
    state_dir = Path(state_dir).resolve()
    db_path = state_dir / DB_NAME
    if not db_path.exists():
        raise InvalidInput(f"no router state in {state_dir}: {DB_NAME} is missing", field="state_dir")
    with tempfile.TemporaryDirectory(prefix="nixie-backup-") as tmp:
        db_copy = Path(tmp) / DB_NAME
        version = _copy_db(db_path, db_copy)
        if isinstance(out, str | os.PathLike):
            target = Path(out).resolve()
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    result = _write_archive(state_dir, db_copy, version, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            result.path, result.size = str(target), target.stat().st_size
            return result
        return _write_archive(state_dir, db_copy, version, out)


def _write_archive(state_dir: Path, db_copy: Path, version: int, f: IO[bytes]) -> BackupResult:
    dirs, files, skipped = _state_files(state_dir)
    entries: dict[str, dict[str, Any]] = {}
    with tarfile.open(fileobj=f, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(str(d.relative_to(state_dir)))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(d.stat().st_mtime)
            tar.addfile(info)
        for name, p in [(DB_NAME, db_copy)] + [(str(p.relative_to(state_dir)), p) for p in files]:
            try:
                fh = open(p, "rb")
            except FileNotFoundError:  # removed meanwhile (a temp file, a revoked key)
                continue
            with fh:
                st = os.fstat(fh.fileno())
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode) & 0o700, int(st.st_mtime)
                reader = _HashingReader(fh, st.st_size)
                tar.addfile(info, reader)
            entries[name] = {"size": info.size, "mode": info.mode, "sha256": reader.sha.hexdigest()}
        manifest = json.dumps({"format": FORMAT, "schema_version": version, "created_at": time.time(),
                               "state_dir": str(state_dir), "files": entries,
                               "skipped": skipped}, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(manifest), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(manifest))
    return BackupResult(path="", size=0, schema_version=version, files=len(entries), skipped=skipped)


# ------------------------------------------------------------------ restore


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    p = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or "\0" in name
            or any(part in ("..", ".", "") for part in name.split("/"))):
        raise InvalidInput(f"the archive member {name!r} would escape the state directory: "
                           "not a router backup; nothing was restored", field="file")
    if not (member.isreg() or member.isdir()):
        kind = "a symlink" if member.issym() else "a hard link" if member.islnk() else "a special file"
        raise InvalidInput(f"the archive member {name!r} is {kind}: not a router backup; "
                           "nothing was restored", field="file")
    if p.parts[0] in EXCLUDED - {DB_NAME} or p.parts[0].startswith(HIDDEN_PREFIXES):
        raise InvalidInput(f"the archive member {name!r} is not state a backup holds; "
                           "nothing was restored", field="file")
    return name


def check_running(state_dir: Path) -> None:
    """Conflict when a `nixie serve` on `state_dir` is running (its heartbeat is fresh)."""
    db = state_dir / DB_NAME
    if not db.exists():
        return
    conn = connect(db, migrate=False)
    try:
        if running_status(conn):
            raise Conflict(f"nixie serve is running on {state_dir}: stop it first "
                           "(systemctl stop nixie); nothing was restored")
    except sqlite3.DatabaseError:
        return  # not a readable database: nothing runs on it
    finally:
        conn.close()


def restore(archive: str | os.PathLike[str] | IO[bytes], state_dir: str | os.PathLike[str], *,
            serve_check: bool = True) -> RestoreResult:
    """Restore `archive` into `state_dir` (see the module's doc). The database is migrated to
    this program's schema when it is older; paths under the archive's state directory are
    rebased onto `state_dir`. `serve_check=False` only for serve itself at its start."""
    state_dir = Path(state_dir).absolute()
    if serve_check:
        check_running(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    tmp = Path(tempfile.mkdtemp(prefix=RESTORE_PREFIX, dir=state_dir))
    try:
        manifest, count = _extract(archive, tmp, state_dir)
        conn = connect(tmp / DB_NAME, migrate=True)
        try:
            _rebase(conn, manifest["state_dir"], str(state_dir))
            version = schema_version(conn)
        finally:
            conn.close()
        if serve_check:
            check_running(state_dir)  # serve may have started meanwhile
        previous = _swap(state_dir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RestoreResult(state_dir=str(state_dir), schema_version=version, files=count,
                         previous=str(previous) if previous else None,
                         from_state_dir=manifest["state_dir"])


def _swap(state_dir: Path, new: Path) -> Path | None:
    """Move what `state_dir` holds aside (into `.before-restore-<time>/`), then the restored
    entries in, each by a rename on the same filesystem. The caches (`KEPT_IN_PLACE`) stay:
    they are keyed by store path and still right. The state directory itself is not renamed:
    its parent (/var/lib) is not the service's to write."""
    old = [e for e in state_dir.iterdir()
           if e != new and e.name not in KEPT_IN_PLACE and not e.name.startswith(HIDDEN_PREFIXES)]
    previous = None
    if old:
        previous = state_dir / f"{PREVIOUS_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        previous.mkdir(mode=STATE_DIR_MODE)
        for e in old:
            os.rename(e, previous / e.name)
    for e in new.iterdir():
        os.rename(e, state_dir / e.name)
    new.rmdir()
    fsync_dir(state_dir)
    return previous


def check(archive: str | os.PathLike[str] | IO[bytes], state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything `restore` checks, without restoring: the archive's manifest (InvalidInput
    when it would be refused). Extracts into a temporary directory under `state_dir`."""
    state_dir = Path(state_dir)
    tmp = Path(tempfile.mkdtemp(prefix=RESTORE_PREFIX, dir=state_dir))
    try:
        manifest, _count = _extract(archive, tmp, state_dir)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pending_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where the web UI stages an uploaded backup for serve to restore at its next start."""
    return Path(state_dir) / f"{RESTORE_PREFIX}pending.tar.gz"


def stage(upload: IO[bytes], state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Keep an uploaded archive (checked whole first) for `nixie serve` to restore when it
    starts next: a running serve cannot restore under itself, so it stops when it sees one
    (exit code RESTART_EXIT; systemd starts it again) and restores first thing."""
    state_dir = Path(state_dir)
    fd, name = tempfile.mkstemp(prefix=f"{RESTORE_PREFIX}upload-", dir=state_dir)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(upload, f, 1 << 20)
            f.flush()
            os.fsync(f.fileno())
        manifest = check(tmp, state_dir)
        os.replace(tmp, pending_path(state_dir))
    finally:
        tmp.unlink(missing_ok=True)
    return {"schema_version": manifest["schema_version"], "created_at": manifest.get("created_at"),
            "files": len(manifest["files"]), "from_state_dir": manifest["state_dir"]}


def restore_pending(state_dir: str | os.PathLike[str]) -> RestoreResult | None:
    """At serve's start, before it opens anything: restore a staged upload, if any. The staged
    file is removed whether or not it could be restored (a refused one would stop every start)."""
    p = pending_path(state_dir)
    if not p.exists():
        return None
    try:
        return restore(p, state_dir, serve_check=False)
    finally:
        p.unlink(missing_ok=True)


def _open_archive(archive: str | os.PathLike[str] | IO[bytes]) -> tarfile.TarFile:
    try:
        if isinstance(archive, str | os.PathLike):
            return tarfile.open(archive, mode="r:*")
        return tarfile.open(fileobj=archive, mode="r:*")
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {archive}", field="file") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InvalidInput(f"not a router backup (not a tar archive: {e}); nothing was restored",
                           field="file") from None


def _extract(archive: str | os.PathLike[str] | IO[bytes], dest: Path,
             fs: Path) -> tuple[dict[str, Any], int]:
    """Extract into `dest` (empty, ours), checking every member; the manifest and the
    number of files."""
    free = shutil.disk_usage(fs).free - FREE_MARGIN_BYTES
    written, members = 0, 0
    hashes: dict[str, tuple[str, int, int]] = {}
    manifest_bytes: bytes | None = None
    tar = _open_archive(archive)
    try:
        for member in tar:
            members += 1
            if members > MAX_MEMBERS:
                raise InvalidInput(f"the archive has more than {MAX_MEMBERS} members: not a "
                                   "router backup; nothing was restored", field="file")
            name = _member_name(member)
            if name == MANIFEST:
                if member.size > 64 << 20 or not member.isreg():
                    raise InvalidInput("the archive's manifest is not one", field="file")
                manifest_bytes = tar.extractfile(member).read()
                continue
            written += max(member.size, 0)
            if written > free:
                raise InvalidInput(f"the archive's files ({written} bytes so far) do not fit on "
                                   f"the disk under {fs}; nothing was restored", field="file")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
            if member.isdir():
                target.mkdir(exist_ok=True, mode=STATE_DIR_MODE)
                continue
            hashes[name] = _extract_file(tar, member, target)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise InvalidInput(f"the archive is damaged ({e}); nothing was restored", field="file") from None
    finally:
        tar.close()
    manifest = _check_manifest(manifest_bytes, hashes)
    return manifest, len(hashes)


def _extract_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> tuple[str, int, int]:
    src = tar.extractfile(member)
    mode = stat.S_IMODE(member.mode) & 0o700 or 0o600
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    sha, n = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as f:
        while chunk := src.read(1 << 20):
            sha.update(chunk)
            n += len(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
        os.fchmod(f.fileno(), mode)
    return sha.hexdigest(), n, mode


def _check_manifest(raw: bytes | None, hashes: dict[str, tuple[str, int, int]]) -> dict[str, Any]:
    if raw is None:
        raise InvalidInput(f"the archive has no {MANIFEST}: not a router backup; nothing was "
                           "restored", field="file")
    try:
        manifest = json.loads(raw)
        version, files = int(manifest["schema_version"]), manifest["files"]
        fmt = int(manifest["format"])
        str(manifest["state_dir"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(f"the archive's {MANIFEST} is unreadable; nothing was restored",
                           field="file") from None
    if fmt > FORMAT:
        raise InvalidInput(f"the archive's format {fmt} is newer than this program's ({FORMAT}): "
                           "restore it with the version that made it; nothing was restored",
                           field="file")
    if version > SCHEMA_VERSION:
        raise InvalidInput(f"the backup's database schema version {version} is newer than this "
                           f"program's ({SCHEMA_VERSION}): restore it with the version of nixie "
                           "that made it, or a newer one; nothing was restored", field="file")
    if DB_NAME not in hashes:
        raise InvalidInput(f"the archive has no {DB_NAME}; nothing was restored", field="file")
    if set(files) != set(hashes):
        odd = sorted(set(files) ^ set(hashes))[:5]
        raise InvalidInput(f"the archive's files do not match its manifest ({', '.join(odd)}); "
                           "nothing was restored", field="file")
    for name, (digest, size, _mode) in hashes.items():
        entry = files[name]
        if entry.get("sha256") != digest or entry.get("size") != size:
            raise InvalidInput(f"{name} in the archive does not match its checksum: the archive "
                               "is damaged or was altered; nothing was restored", field="file")
    return manifest


def _rebase(conn: sqlite3.Connection, old: str, new: str) -> None:
    old, new = old.rstrip("/"), new.rstrip("/")
    if old == new:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column in PATH_COLUMNS:
            conn.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                         f"WHERE substr({column}, 1, ?) = ?",
                         (new, len(old) + 1, len(old) + 1, old + "/"))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
