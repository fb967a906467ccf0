"""MAC address validation and normalisation (lower-case, colon-separated)."""

import re

from appliance.errors import InvalidInput

_HEX12 = re.compile(r"^[0-9a-f]{12}$")


def normalize_mac(value: object) -> str:
    """Accept aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or aabbccddeeff."""
    if not isinstance(value, str):
        raise InvalidInput(f"MAC address must be a string, got {value!r}", field="mac")
    s = value.strip().lower()
    bare = s.replace(":", "").replace("-", "").replace(".", "")
    if not _HEX12.match(bare):
        raise InvalidInput(f"{value!r} is not a MAC address (want aa:bb:cc:dd:ee:ff)", field="mac")
    if ":" in s or "-" in s:
        parts = re.split(r"[:-]", s)
        if len(parts) != 6 or any(len(p) != 2 for p in parts):
            raise InvalidInput(f"{value!r} is not a MAC address (want aa:bb:cc:dd:ee:ff)", field="mac")
    if int(bare[:2], 16) & 1:
        raise InvalidInput(f"{value!r} is a multicast address, not a host's MAC", field="mac")
    return ":".join(bare[i : i + 2] for i in range(0, 12, 2))


def mac_to_bytes(mac: str) -> bytes:
    return bytes.fromhex(normalize_mac(mac).replace(":", ""))


def bytes_to_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw[:6])
