"""What the netns tests that run `nixie serve` on a LAN bridge share: its config,
an HTTP GET from inside the namespace, and whether a process still lives."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from appliance.config.schema import example_config, load_config
from appliance.domain import apitokens, users
from appliance.state.db import Store
from tests.https import GET_SNIPPET


def router_config(tmp_path: Path, address: str | None = None, **sections: dict) -> Path:
    """A config file for a router on `br-lan` (example_config's address unless
    `address`), DHCP off, DNS off; each of `sections` updates that section."""
    extra = {"address": address} if address else {}
    cfg = example_config(state_dir=str(tmp_path / "state"), interface="br-lan", **extra)
    cfg["dhcp"]["mode"] = "off"
    cfg["dns"]["enable"] = False
    for name, values in sections.items():
        cfg[name].update(values)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def http_get(ns, url: str, token: str | None = None) -> tuple[int, str]:
    """(status, body) of a GET run inside `ns` (https: the appliance's own certificate);
    with an API token when given (what /healthz needs to show more than ok / not ok)."""
    r = ns.run(sys.executable, "-c", GET_SNIPPET, url, *([token] if token else []))
    status, _, body = r.stdout.partition("\n")
    return int(status), body


def admin_api_token(config_path: Path) -> str:
    """An admin user and an API token of theirs, made in the state DB of the config
    at `config_path` (as `nixie admin create-user` and the Tokens page would)."""
    store = Store(load_config(config_path).db_path)
    try:
        uid = users.create_user(store.conn(), "admin", "correct horse battery")
        return apitokens.create_token(store.conn(), uid, "tests")[1]
    finally:
        store.close()


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
