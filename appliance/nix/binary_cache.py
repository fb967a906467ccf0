"""The router's Nix store as a signed binary cache (a WSGI app).

Routes, relative to where the HTTP boot server mounts it (`/nix-cache`):
- `GET /nix-cache-info`
- `GET /<hash>.narinfo`: path info from `nix path-info --json` with the router's
  signature. Only paths the router signed are served: the closure of every build is
  signed when the build completes (`sign_closure`, also for paths that were in the
  store before the key existed), never at request time. The key is `nix.cache_key_file`
  (on NixOS the one the daemon signs its builds with) or one made once by
  `nix-store --generate-binary-cache-key` in `state_dir/binary-cache/` (mode 0600).
  Signing needs no privilege: the appliance signs Nix's own fingerprint of the path
  with ed25519 and keeps the signature next to the key (`sigs/<hash>`), since an
  unprivileged client of the Nix daemon may not add signatures to the store.
- `GET /nar/<hash>.nar`: `nix-store --dump`, streamed in chunks with its
  Content-Length (the NAR size) known up front; never buffered whole.

Every store path is addressed by the 32-character hash of its name; nothing
outside the store can be named. A path that is not signed is a 404; a failure of
Nix or of the key is a 503 with an event, never a 500.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance.nix.command import Nix, NixFailed

log = logging.getLogger("nixie.binary_cache")

STORE_DIR = "/nix/store"
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
_HASH = re.compile(r"^[0-9a-df-np-sv-z]{32}$")
_CHUNK = 256 * 1024


def nix32(data: bytes) -> str:
    """Nix's base-32 encoding (its own alphabet and bit order)."""
    n = (len(data) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        bit = i * 5
        j, k = divmod(bit, 8)
        c = data[j] >> k
        if j + 1 < len(data):
            c |= data[j + 1] << (8 - k)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


def to_nix32_hash(h: str) -> str:
    """`sha256-<base64>` (SRI) or `sha256:<nix32>` -> `sha256:<nix32>`."""
    if h.startswith("sha256-"):
        return "sha256:" + nix32(base64.b64decode(h[len("sha256-"):]))
    if h.startswith("sha256:") and len(h) == len("sha256:") + 52:
        return h
    raise ValueError(f"unsupported hash {h!r}")


def ensure_signing_key(nix: Nix, key_dir: str | os.PathLike, name: str | None = None
                       ) -> tuple[Path, str]:
    """The router's key pair: (secret key file, public key text). Made once."""
    d = Path(key_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    secret, public = d / "secret", d / "public"
    if not (secret.exists() and public.exists()):
        # a name of its own: a path already signed under our name is signed by this key
        name = name or f"{socket.gethostname()}-nixie-{secrets.token_hex(4)}"
        tmp_s, tmp_p = d / "secret.tmp", d / "public.tmp"
        tmp_s.unlink(missing_ok=True)
        tmp_p.unlink(missing_ok=True)
        old = os.umask(0o077)
        try:
            nix.run(["nix-store", "--generate-binary-cache-key", name, str(tmp_s), str(tmp_p)])
        finally:
            os.umask(old)
        os.chmod(tmp_s, 0o600)
        os.replace(tmp_p, public)
        os.replace(tmp_s, secret)
    os.chmod(secret, 0o600)
    return secret, public.read_text().strip()


class KeyUnusable(Exception):
    """The signing key cannot be read or is not a Nix secret key."""


class CacheKey:
    """A Nix binary-cache secret key (`name:base64(ed25519 seed + public key)`)."""

    def __init__(self, name: str, private: Ed25519PrivateKey):
        self.name = name
        self._private = private
        pub = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = f"{name}:{base64.b64encode(pub).decode()}"

    @classmethod
    def load(cls, path: str | os.PathLike) -> CacheKey:
        try:
            text = Path(path).read_text().strip()
            name, _, b64 = text.partition(":")
            raw = base64.b64decode(b64, validate=True)
        except (OSError, ValueError) as e:
            raise KeyUnusable(f"cannot read the cache signing key {path}: {e}") from None
        if not name or len(raw) != 64:
            raise KeyUnusable(f"{path} is not a Nix secret key (name:base64 of 64 bytes)")
        return cls(name, Ed25519PrivateKey.from_private_bytes(raw[:32]))

    def sign(self, fingerprint_text: str) -> str:
        sig = self._private.sign(fingerprint_text.encode())
        return f"{self.name}:{base64.b64encode(sig).decode()}"


def fingerprint(info: dict[str, Any]) -> str:
    """What Nix signs and checks: `1;<path>;<nar hash, nix32>;<nar size>;<refs,...>`."""
    refs = ",".join(sorted(info.get("references", [])))
    return (f"1;{info['path']};{to_nix32_hash(info['narHash'])};{int(info['narSize'])};"
            f"{refs}")


class Signatures:
    """The router's signatures of store paths, one small file per path under `directory`,
    each with the fingerprint it signed: a path whose contents changed (deleted and
    rebuilt differently) no longer matches and counts as unsigned."""

    def __init__(self, directory: str | os.PathLike, key: CacheKey):
        self.dir = Path(directory)
        self.key = key

    def _file(self, path: str) -> Path:
        return self.dir / os.path.basename(path)[:32]

    def get(self, info: dict[str, Any]) -> str | None:
        try:
            saved = json.loads(self._file(info["path"]).read_text())
        except (OSError, ValueError):
            return None
        sig = saved.get("sig", "") if isinstance(saved, dict) else ""
        if not sig.startswith(self.key.name + ":") or saved.get("fingerprint") != fingerprint(info):
            return None
        return sig

    def put(self, info: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fp = fingerprint(info)
        target = self._file(info["path"])
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({"path": info["path"], "fingerprint": fp,
                                   "sig": self.key.sign(fp)}))
        os.replace(tmp, target)

    def signed(self, info: dict[str, Any]) -> dict[str, Any] | None:
        """`info` with the router's signature, or None if the router did not sign it."""
        ours = [s for s in info.get("signatures", []) if s.startswith(self.key.name + ":")]
        if not ours:
            sig = self.get(info)
            if sig is None:
                return None
            return {**info, "signatures": [*info.get("signatures", []), sig]}
        return info


def path_infos(nix: Nix, paths: Iterable[str], recursive: bool = True) -> list[dict[str, Any]]:
    """`nix path-info --json [-r]` of `paths`: the valid ones (with `-r`, every valid
    member of their closures). Raises NixFailed when one is not valid."""
    paths = list(paths)
    if not paths:
        return []
    raw = json.loads(nix.run(["nix", "path-info", "--json", *(["-r"] if recursive else []),
                              *nix.store_args(), "--", *paths]))
    if isinstance(raw, dict):  # newer Nix: {path: info}
        raw = [{"path": p, **(i or {})} for p, i in raw.items()]
    return [i for i in raw if i.get("valid", True) and "narHash" in i]


def sign_closure(nix: Nix, sigs: Signatures, paths: Iterable[str]) -> int:
    """Sign every path of the closures of `paths` that the router has not signed yet,
    old or new. Returns how many were signed now. Raises NixFailed or OSError."""
    n = 0
    for info in path_infos(nix, paths):
        if sigs.signed(info) is None:
            sigs.put(info)
            n += 1
    return n


def cache_signatures(cfg, nix: Nix) -> Signatures:
    """The signatures store of the configured key (`nix.cache_key_file`, else the key
    made in state_dir/binary-cache). Raises KeyUnusable, NixFailed or OSError."""
    key_dir = Path(cfg.state_dir) / "binary-cache"
    key_file = cfg.nix.cache_key_file
    if key_file is None:
        key_file, _ = ensure_signing_key(nix, key_dir)
    return Signatures(key_dir / "sigs", CacheKey.load(key_file))


def render_narinfo(info: dict[str, Any]) -> str:
    """narinfo text from one `nix path-info --json` entry."""
    path = info["path"]
    hash_part = os.path.basename(path)[:32]
    lines = [
        f"StorePath: {path}",
        f"URL: nar/{hash_part}.nar",
        "Compression: none",
        f"NarHash: {to_nix32_hash(info['narHash'])}",
        f"NarSize: {int(info['narSize'])}",
        "References: " + " ".join(sorted(os.path.basename(r) for r in info.get("references", []))),
    ]
    if info.get("deriver"):
        lines.append(f"Deriver: {os.path.basename(info['deriver'])}")
    for sig in info.get("signatures", []):
        lines.append(f"Sig: {sig}")
    if info.get("ca"):
        lines.append(f"CA: {info['ca']}")
    return "\n".join(lines) + "\n"


class BinaryCache:
    """WSGI app serving the paths of the local store the router signed, as a binary cache.

    `signatures` is None when the key is unusable (`problem` says why): every narinfo and
    NAR is then a 503. `events(kind, message, level=...)` records a failure (at most one
    a minute per kind), so a broken cache shows in the event log."""

    EVENT_INTERVAL = 60.0
    RESCAN_INTERVAL = 1.0  # a miss rescans the store at least this often, changed or not
    RACY_SECONDS = 0.05  # a store mtime this recent may hide a path added in the same tick

    def __init__(self, nix: Nix, signatures: Signatures | None, *, priority: int = 40,
                 store_dir: str = STORE_DIR, problem: str | None = None,
                 events: Callable[..., Any] | None = None):
        self.nix = nix
        self.store_dir = store_dir
        self.priority = priority
        self.sigs = signatures
        self.problem = problem if signatures is None else None
        self.events = events
        self.public_key = signatures.key.public if signatures else None
        self._lock = threading.Lock()
        self._index: dict[str, str] = {}
        self._infos: dict[str, dict[str, Any]] = {}  # basename -> signed path info
        self._index_time = 0.0
        self._index_mtime: int | None = None
        self._last_event: dict[str, float] = {}
        self.stats = {"requests": 0, "narinfo": 0, "narinfo_missing": 0, "unsigned": 0,
                      "nar": 0, "nar_bytes": 0, "bad_requests": 0, "unavailable": 0}

    # ------------------------------------------------------------ lookups
    def path_for_hash(self, hash_part: str) -> str | None:
        """The store path with this hash part. The store's listing is kept in
        memory and read again on a miss only when the store directory changed
        since it was read (its mtime) or RESCAN_INTERVAL passed: clients probing
        for paths we lack (most narinfo requests) cost no rescans, and a path a
        build adds right after a miss is served at once."""
        if not _HASH.match(hash_part):
            return None
        name = self._index.get(hash_part)
        if name is None and self._stale():
            self._rescan()
            name = self._index.get(hash_part)
        if name is None:
            return None
        path = os.path.join(self.store_dir, name)
        return path if os.path.lexists(path) else None

    def _store_mtime(self) -> int | None:
        try:
            return os.stat(self.store_dir).st_mtime_ns
        except OSError:
            return None

    def _stale(self) -> bool:
        return (self._index_mtime is None or self._store_mtime() != self._index_mtime
                or time.monotonic() - self._index_time > self.RESCAN_INTERVAL)

    def _rescan(self) -> None:
        # the mtime is read before the listing: a path added while it is read shows as
        # a later mtime. One within RACY_SECONDS of now may share its timestamp with a
        # path added after the listing (coarse clock ticks), so it forces the next rescan.
        mtime = self._store_mtime()
        if mtime is not None and time.time() - mtime / 1e9 < self.RACY_SECONDS:
            mtime = None
        index = {}
        try:
            with os.scandir(self.store_dir) as it:
                for e in it:
                    if len(e.name) > 33 and e.name[32] == "-" and not e.name.endswith(".lock"):
                        index[e.name[:32]] = e.name
        except FileNotFoundError:
            pass
        self._index, self._index_time, self._index_mtime = index, time.monotonic(), mtime

    def path_info(self, path: str) -> dict[str, Any] | None:
        """Path info of a valid path the router signed, with its signature; None when
        the path is not valid or not signed (no signing happens here). A signed path's
        closure is read in one go (a client copying it asks for every member next);
        signed path info never changes, so it is kept in memory."""
        base = os.path.basename(path)
        info = self._infos.get(base)
        if info is not None:
            return info
        try:
            mine = [i for i in path_infos(self.nix, [path], recursive=False)
                    if i["path"] == path]
        except NixFailed:
            return None  # not valid in the store (e.g. a half-built output)
        if not mine or self.sigs.signed(mine[0]) is None:
            self.stats["unsigned"] += 1
            return None
        if len(self._infos) > 200_000:
            self._infos.clear()
        for i in path_infos(self.nix, [path]):
            signed = self.sigs.signed(i)
            if signed is not None:
                self._infos[os.path.basename(i["path"])] = signed
        return self._infos.get(base)

    # ------------------------------------------------------------ WSGI
    def __call__(self, environ, start_response):
        self.stats["requests"] += 1
        try:
            return self._route(environ, start_response)
        except Exception as e:  # noqa: BLE001 - never a 500: say it is unavailable
            log.exception("binary cache request failed")
            return self._unavailable(start_response, f"{type(e).__name__}: {e}")

    def _unavailable(self, start_response, why: str):
        self.stats["unavailable"] += 1
        t = time.monotonic()
        if self.events is not None and t - self._last_event.get(why, -1e9) > self.EVENT_INTERVAL:
            self._last_event[why] = t
            try:
                self.events("cache.unavailable", f"binary cache unavailable: {why}",
                            level="error")
            except Exception:  # noqa: BLE001 - the answer matters more than the event
                log.warning("could not record a binary cache event", exc_info=True)
        log.error("binary cache unavailable", extra={"reason": why})
        return self._error(start_response, "503 Service Unavailable",
                           "binary cache unavailable; see the router's event log\n",
                           [("Retry-After", "60")])

    def _route(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        if method not in ("GET", "HEAD"):
            return self._error(start_response, "405 Method Not Allowed", "GET or HEAD only\n",
                               [("Allow", "GET, HEAD")])
        head = method == "HEAD"
        if path == "/nix-cache-info":
            body = (f"StoreDir: {self.store_dir}\nWantMassQuery: 1\n"
                    f"Priority: {self.priority}\n").encode()
            return self._ok(start_response, body, "text/x-nix-cache-info", head)
        m = re.fullmatch(r"/([0-9a-z]{32})\.narinfo", path)
        if (m or path.startswith("/nar/")) and self.sigs is None:
            return self._unavailable(start_response, self.problem or "no signing key")
        if m:
            return self._narinfo(m.group(1), start_response, head)
        m = re.fullmatch(r"/nar/([0-9a-z]{32})\.nar", path)
        if m:
            return self._nar(m.group(1), start_response, head)
        self.stats["bad_requests"] += 1
        return self._error(start_response, "404 Not Found", "no such cache file\n")

    def _ok(self, start_response, body: bytes, ctype: str, head: bool):
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [] if head else [body]

    def _error(self, start_response, status: str, text: str, extra=()):
        body = text.encode()
        start_response(status, [("Content-Type", "text/plain"),
                                ("Content-Length", str(len(body))), *extra])
        return [body]

    def _narinfo(self, hash_part: str, start_response, head: bool):
        path = self.path_for_hash(hash_part)
        info = self.path_info(path) if path else None
        if info is None:
            self.stats["narinfo_missing"] += 1
            return self._error(start_response, "404 Not Found",
                               "no such path signed by this router\n")
        self.stats["narinfo"] += 1
        return self._ok(start_response, render_narinfo(info).encode(), "text/x-nix-narinfo", head)

    def _nar(self, hash_part: str, start_response, head: bool):
        path = self.path_for_hash(hash_part)
        info = self.path_info(path) if path else None
        if info is None:
            return self._error(start_response, "404 Not Found", "no such path\n")
        size = int(info["narSize"])
        start_response("200 OK", [("Content-Type", "application/x-nix-nar"),
                                  ("Content-Length", str(size))])
        if head:
            return []
        self.stats["nar"] += 1
        return self._stream_nar(path, size)

    def _stream_nar(self, path: str, size: int):
        proc = subprocess.Popen([self.nix.exe("nix-store"), "--dump", path],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=self.nix.env())
        sent = 0
        try:
            while True:
                chunk = proc.stdout.read(_CHUNK)
                if not chunk:
                    break
                sent += len(chunk)
                self.stats["nar_bytes"] += len(chunk)
                yield chunk
            proc.wait()
            if sent != size or proc.returncode != 0:
                # the client sees a short body and rejects it; say why here
                log.error("NAR dump ended early", extra={"path": path, "sent": sent,
                                                         "size": size, "rc": proc.returncode})
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def create_binary_cache(cfg, nix: Nix | None = None,
                        events: Callable[..., Any] | None = None) -> BinaryCache:
    """The app the HTTP boot server mounts at /nix-cache. A key that cannot be used
    does not stop the router: the cache answers 503 and says why in the event log."""
    nix = nix or Nix.from_config(cfg)
    try:
        sigs = cache_signatures(cfg, nix)
    except (KeyUnusable, NixFailed, OSError) as e:
        log.error("binary cache has no usable signing key", extra={"error": str(e)})
        return BinaryCache(nix, None, problem=str(e), events=events)
    return BinaryCache(nix, sigs, events=events)
