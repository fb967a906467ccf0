"""What a LAN machine needs to trust the router's binary cache: its URL (the HTTP boot
listener's `/nix-cache`, `appliance.nix.binary_cache`), the router's public signing key
(`state_dir/binary-cache/public`, made by `nixie serve` when it starts) and a NixOS snippet
to paste. Read only: nothing here makes or changes the key."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_PATH = "/nix-cache"
KEY_DIR = "binary-cache"


@dataclass(frozen=True)
class CacheInfo:
    url: str
    public_key: str | None  # None until nixie serve has made the key
    snippet: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def public_key(state_dir: str | Path) -> str | None:
    try:
        key = (Path(state_dir) / KEY_DIR / "public").read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None
    return key or None


def snippet(url: str, key: str) -> str:
    return (f'nix.settings.substituters = [ "{url}" ];\n'
            f'nix.settings.trusted-public-keys = [ "{key}" ];\n')


def cache_info(cfg) -> CacheInfo:
    url = cfg.boot_base_url + CACHE_PATH
    key = public_key(cfg.state_dir)
    return CacheInfo(url, key, snippet(url, key) if key else None)
