"""What a private flake needs to be fetched, and the webhook that says it changed.

Per flake, under `state_dir/flakes/<id>/` (directory 0700, files 0600, written whole):
- `access-token`: given to Nix as its `access-tokens` setting (`<host>=<token>`, the host
  from the flake URL: github:, gitlab:, sourcehut: or an http(s) URL) through `NIX_CONFIG`
  in nix's environment, never on a command line (which `ps` shows and the build log
  records);
- `deploy-key`: an SSH private key, given to git (`git+ssh://` flakes) through
  `GIT_SSH_COMMAND` (its path, never its content; the host key is pinned on first use in
  `known_hosts` next to it);
- `hook-secret`: the webhook's shared secret.
The database only says which exists (`flakes.credential`, `flakes.hook_enabled`); no
secret is ever shown again, logged, or written to an event, and Nix's error texts are
cleared of them before they are stored (`redact`).

A webhook (`POST /api/v1/flakes/<id>/hook`) is verified in the shapes forges send:
GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, Gitea's, Forgejo's
and Gogs' `X-Gitea-Signature` / `X-Forgejo-Signature` / `X-Gogs-Signature: <hex>` (the same
HMAC), GitLab's `X-Gitlab-Token: <secret>`; every comparison is constant-time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import secrets
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from appliance.errors import InvalidInput
from appliance.nix.command import Nix

TOKEN_FILE, KEY_FILE, HOOK_FILE = "access-token", "deploy-key", "hook-secret"
KINDS = ("none", "token", "ssh_key")
MAX_TOKEN = 4096
MAX_KEY = 16384
MAX_HOOK_BODY = 1 << 20  # forges send at most a few hundred KiB for a push
HMAC_HEADERS = ("X-Hub-Signature-256", "X-Gitea-Signature", "X-Forgejo-Signature",
                "X-Gogs-Signature")
FORGE_HOSTS = {"github": "github.com", "gitlab": "gitlab.com", "sourcehut": "git.sr.ht"}
REDACTED = "[secret]"


def flake_dir(state_dir: str | os.PathLike, flake_id: int) -> Path:
    return Path(state_dir) / "flakes" / str(int(flake_id))


def _write(path: Path, data: bytes) -> None:
    """Replace `path` whole (0600, in a 0700 directory): a temporary file, fsynced, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    os.chmod(path.parent.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------ credentials

def validate_token(token: object) -> str:
    if not isinstance(token, str) or not token.strip():
        raise InvalidInput("an access token is required", field="secret")
    token = token.strip()
    if len(token) > MAX_TOKEN or any(c.isspace() or ord(c) < 0x21 or c == "\x7f" for c in token):
        raise InvalidInput("an access token is one line of printable characters without spaces",
                           field="secret")
    return token


def validate_ssh_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput("an SSH private key is required", field="secret")
    key = key.strip().replace("\r\n", "\n") + "\n"
    if len(key) > MAX_KEY or not re.match(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n", key) \
            or "-----END " not in key:
        raise InvalidInput("paste the whole SSH private key, from -----BEGIN ... PRIVATE KEY----- "
                           "to its END line (a deploy key without a passphrase)", field="secret")
    return key


def store_credential(state_dir: str | os.PathLike, flake_id: int, kind: str,
                     secret: str | None) -> str:
    """Write (or with kind 'none', delete) the flake's credential; returns the kind. The
    caller records the kind (`flakes.set_credential_kind`)."""
    d = flake_dir(state_dir, flake_id)
    if kind == "token":
        _write(d / TOKEN_FILE, validate_token(secret).encode())
        (d / KEY_FILE).unlink(missing_ok=True)
    elif kind == "ssh_key":
        _write(d / KEY_FILE, validate_ssh_key(secret).encode())
        (d / TOKEN_FILE).unlink(missing_ok=True)
    elif kind == "none":
        for name in (TOKEN_FILE, KEY_FILE, "known_hosts"):
            (d / name).unlink(missing_ok=True)
    else:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    return kind


def remove_files(state_dir: str | os.PathLike, flake_id: int) -> None:
    """A removed flake's secrets go with it."""
    shutil.rmtree(flake_dir(state_dir, flake_id), ignore_errors=True)


def token_host(url: str) -> str | None:
    """The host Nix's `access-tokens` entry names for this flake URL."""
    scheme, _, rest = url.partition(":")
    base = scheme.split("+")[-1]
    if base in FORGE_HOSTS:
        q = parse_qs(rest.partition("?")[2])
        return (q.get("host") or [FORGE_HOSTS[base]])[0]
    if base in ("http", "https"):
        return urlsplit(url.split("+", 1)[-1] if "+" in scheme else url).hostname
    return None


class FlakeNix(Nix):
    """`Nix` with one flake's credential in its environment (never its arguments)."""

    def __init__(self, nix: Nix, access_tokens: str = "", ssh_command: str = ""):
        super().__init__(**{f.name: getattr(nix, f.name) for f in dataclasses.fields(nix)})
        self.access_tokens = access_tokens
        self.ssh_command = ssh_command

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.access_tokens:
            env["NIX_CONFIG"] += f"\naccess-tokens = {self.access_tokens}"
        if self.ssh_command:
            env["GIT_SSH_COMMAND"] = self.ssh_command
        return env


def nix_for(nix: Nix, state_dir: str | os.PathLike | None, flake: dict[str, Any] | None) -> Nix:
    """The `Nix` to fetch this flake with: `nix` itself when it needs no credential."""
    if state_dir is None or not flake or flake.get("credential", "none") == "none":
        return nix
    d = flake_dir(state_dir, flake["id"])
    if flake["credential"] == "token":
        token, host = _read(d / TOKEN_FILE), token_host(flake["url"])
        if token and host:
            return FlakeNix(nix, access_tokens=f"{host}={token.strip()}")
        return nix
    if flake["credential"] == "ssh_key" and (d / KEY_FILE).exists():
        cmd = shlex.join(["ssh", "-i", str(d / KEY_FILE), "-o", "IdentitiesOnly=yes",
                          "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                          "-o", f"UserKnownHostsFile={d / 'known_hosts'}"])
        return FlakeNix(nix, ssh_command=cmd)
    return nix


def secrets_of(state_dir: str | os.PathLike | None, flake: dict[str, Any] | None) -> list[str]:
    """The flake's secret strings as they could appear in a text (the key by its lines)."""
    if state_dir is None or not flake:
        return []
    d = flake_dir(state_dir, flake["id"])
    out = []
    for name in (TOKEN_FILE, HOOK_FILE):
        s = (_read(d / name) or "").strip()
        if len(s) >= 4:
            out.append(s)
    for line in (_read(d / KEY_FILE) or "").splitlines():
        if len(line) >= 16 and not line.startswith("-----"):
            out.append(line.strip())
    return out


def redactor(state_dir: str | os.PathLike | None, flake: dict[str, Any] | None
             ) -> Callable[[str], str]:
    """A function clearing texts (Nix's errors, log lines) of the flake's secrets."""
    found = secrets_of(state_dir, flake)

    def clean(text: str) -> str:
        for s in found:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    return clean


def redact(text: str, state_dir: str | os.PathLike | None, flake: dict[str, Any] | None) -> str:
    return redactor(state_dir, flake)(text) if text else text


# ------------------------------------------------------------------ webhooks

def new_hook_secret(state_dir: str | os.PathLike, flake_id: int) -> str:
    """A new webhook secret (the old one stops working); shown once by the caller."""
    secret = secrets.token_urlsafe(32)
    _write(flake_dir(state_dir, flake_id) / HOOK_FILE, secret.encode())
    return secret


def remove_hook_secret(state_dir: str | os.PathLike, flake_id: int) -> None:
    (flake_dir(state_dir, flake_id) / HOOK_FILE).unlink(missing_ok=True)


def hook_secret(state_dir: str | os.PathLike, flake_id: int) -> bytes | None:
    s = _read(flake_dir(state_dir, flake_id) / HOOK_FILE)
    return s.strip().encode() if s and s.strip() else None


def verify_hook(secret: bytes, headers, body: bytes) -> bool:
    """Whether the request carries a valid forge signature (or GitLab's token) for `secret`.
    `headers` is case-insensitive (a Flask/Werkzeug Headers)."""
    want = hmac.new(secret, body, hashlib.sha256).hexdigest()
    ok = False
    for name in HMAC_HEADERS:
        got = headers.get(name)
        if got is None:
            continue
        got = got.strip()
        if got.lower().startswith("sha256="):
            got = got[7:]
        ok |= hmac.compare_digest(got.lower().encode(), want.encode())
    token = headers.get("X-Gitlab-Token")
    if token is not None:
        ok |= hmac.compare_digest(token.strip().encode(), secret)
    return ok
