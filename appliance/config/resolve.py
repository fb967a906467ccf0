"""The one runtime configuration: the file, then the admin's overrides, then the
confirmed network settings, resolved into a single validated `Config`.

Plain functions over data (no DB here): `appliance.domain.settings` reads the
stored overrides and network settings and calls `resolve`; the composition root
(`appliance.runtime.wiring`) builds every service from its result and applies
the `changed_keys` of each new result to the running services.
"""

from __future__ import annotations

import copy
from typing import Any

from appliance.config.schema import Config, iter_keys, parse_config

# Keys the confirmed network settings (`nixie net`, the Network page) decide.
NETWORK_KEYS = ("lan.interface", "lan.address", "wan.interface", "wan.address", "wan.gateway")


def lookup(data: dict[str, Any], key: str) -> Any:
    """data["a"]["b"] for key "a.b"."""
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def assign(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def network_values(network: dict[str, Any] | None) -> dict[str, Any]:
    """{dotted key: value} from stored network settings (`NetworkSettings.to_dict()`)."""
    if not network:
        return {}
    mode = network.get("wan_mode", "none")
    return {
        "lan.interface": network["lan_interface"],
        "lan.address": network["lan_address"],
        "wan.interface": network.get("wan_interface") if mode != "none" else None,
        "wan.address": network.get("wan_address") if mode == "static" else None,
        "wan.gateway": network.get("wan_gateway") if mode == "static" else None,
    }


def merged(base: Config, overrides: dict[str, Any], network: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """The raw data of file ⊕ overrides ⊕ network, before validation. Keys the
    deployment locks (`locked`) keep the file's value whatever is stored."""
    data = copy.deepcopy(base.to_dict())
    for key in base._derived:  # null in the file: derived again from the resolved values
        assign(data, key, None)
    locked = set(base.locked)
    for key, value in (overrides | network_values(network)).items():
        if key not in locked:
            assign(data, key, value)
    return data


def resolve(base: Config, overrides: dict[str, Any], network: dict[str, Any] | None = None
            ) -> Config:
    """The validated runtime config. Raises ConfigError naming the key at fault."""
    if not overrides and not network:
        return base
    return parse_config(merged(base, overrides, network), base.path)


_LEAVES = tuple(k for k, _ in iter_keys())


def changed_keys(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (before, after)} for every leaf that differs."""
    a, b = old.to_dict(), new.to_dict()
    out = {}
    for key in _LEAVES:
        x, y = lookup(a, key), lookup(b, key)
        if x != y:
            out[key] = (x, y)
    return out
