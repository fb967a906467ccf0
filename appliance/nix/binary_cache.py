"""The router's Nix store as a signed binary cache (a WSGI app).

Routes, relative to where the HTTP boot server mounts it (`/nix-cache`):
- `GET /nix-cache-info`
- `GET /<hash>.narinfo`: path info from `nix path-info --json`, signed with the
  router's own key (made once by `nix-store --generate-binary-cache-key` in
  `state_dir/binary-cache/`, secret file mode 0600). Signing is done by Nix
  itself (`nix store sign`), so the fingerprint is exactly what clients check.
- `GET /nar/<hash>.nar`: `nix-store --dump`, streamed in chunks with its
  Content-Length (the NAR size) known up front; never buffered whole.

Every store path is addressed by the 32-character hash of its name; nothing
outside the store can be named.
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
from pathlib import Path
from typing import Any

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
    """WSGI app serving the local store as a signed binary cache."""

    def __init__(self, nix: Nix, key_dir: str | os.PathLike, *, priority: int = 40,
                 store_dir: str = STORE_DIR, key_name: str | None = None):
        self.nix = nix
        self.store_dir = store_dir
        self.priority = priority
        self.secret_key, self.public_key = ensure_signing_key(nix, key_dir, key_name)
        self.key_name = self.public_key.split(":", 1)[0]
        self._lock = threading.Lock()
        self._index: dict[str, str] = {}
        self._infos: dict[str, dict[str, Any]] = {}  # basename -> signed path info
        self._index_time = 0.0
        self.stats = {"requests": 0, "narinfo": 0, "narinfo_missing": 0, "nar": 0,
                      "nar_bytes": 0, "bad_requests": 0}

    # ------------------------------------------------------------ lookups
    def path_for_hash(self, hash_part: str) -> str | None:
        """The store path with this hash part. The store's listing is kept in
        memory and read again on a miss at most once a second, so clients
        probing for paths we lack (most narinfo requests) cost no rescans."""
        if not _HASH.match(hash_part):
            return None
        name = self._index.get(hash_part)
        if name is None and time.monotonic() - self._index_time > 1.0:
            self._rescan()
            name = self._index.get(hash_part)
        if name is None:
            return None
        path = os.path.join(self.store_dir, name)
        return path if os.path.lexists(path) else None

    def _rescan(self) -> None:
        index = {}
        try:
            with os.scandir(self.store_dir) as it:
                for e in it:
                    if len(e.name) > 33 and e.name[32] == "-" and not e.name.endswith(".lock"):
                        index[e.name[:32]] = e.name
        except FileNotFoundError:
            pass
        self._index, self._index_time = index, time.monotonic()

    def _signed(self, info: dict[str, Any]) -> bool:
        return any(sig.startswith(self.key_name + ":") for sig in info.get("signatures", []))

    def path_info(self, path: str) -> dict[str, Any] | None:
        """`nix path-info` of a valid path, signed with our key. The first time a
        path is asked for, its whole closure is signed and read in one go
        (a client copying a closure asks for every member next); path info
        of a valid path never changes, so it is kept in memory."""
        base = os.path.basename(path)
        info = self._infos.get(base)
        if info is not None:
            return info
        try:
            infos = json.loads(self.nix.run(["nix", "path-info", "--json", "-r", path]))
        except NixFailed:
            return None  # not valid in the store (e.g. a half-built output)
        unsigned = [i["path"] for i in infos if i.get("valid", True) and not self._signed(i)]
        if unsigned:
            with self._lock:
                for k in range(0, len(unsigned), 200):
                    self.nix.run(["nix", "store", "sign", "--key-file", str(self.secret_key),
                                  *unsigned[k:k + 200]])
            infos = json.loads(self.nix.run(["nix", "path-info", "--json", "-r", path]))
        if len(self._infos) > 200_000:
            self._infos.clear()
        for i in infos:
            if i.get("valid", True) and self._signed(i):
                self._infos[os.path.basename(i["path"])] = i
        return self._infos.get(base)

    # ------------------------------------------------------------ WSGI
    def __call__(self, environ, start_response):
        self.stats["requests"] += 1
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
            return self._error(start_response, "404 Not Found", "no such path\n")
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


def create_binary_cache(cfg, nix: Nix | None = None) -> BinaryCache:
    """The app the HTTP boot server mounts at /nix-cache."""
    nix = nix or Nix.from_config(cfg)
    return BinaryCache(nix, Path(cfg.state_dir) / "binary-cache")
