"""What the desired-state tests share: a LAN (router and client namespaces) with the
whole `nixie serve` in the router's (DHCP on lan0, HTTP boot, web UI, a local build
worker on the real `nix`), DHCP clients with MACs of their own, and HTTP requests
made from inside a namespace as a user or a booting machine would."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from appliance.domain import apitokens, users
from appliance.state.db import Store
from lab.netns import Netns
from tests.netns.dhcp_lab import Lan
from tests.nixlab import NIX_EXTRA

LAN_IP = "10.77.0.1"
WEB = f"https://{LAN_IP}:8080"  # web.tls: the appliance's own certificate
BOOT = f"http://{LAN_IP}:8081"
T = TypeVar("T")


def appliance_lan(tmp: Path, dhcp_range: tuple[str, str], **sections: dict) -> Lan:
    """A `Lan` whose serve runs every service of the appliance on lan0 (DNS off):
    DHCP (`dhcp_range`), HTTP boot on BOOT, the web UI on WEB, builds with the real
    nix; each of `sections` updates that section of the config file. Not started."""
    lan = Lan(tmp, address=f"{LAN_IP}/24", dhcp_range=dhcp_range)
    cfg = json.loads(lan.config.read_text())
    cfg["nix"] = {"extra_config": NIX_EXTRA}
    cfg["builder"] = {"kind": "local", "flake_refresh_seconds": 0, "flake_policy": "manual"}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    lan.config.write_text(json.dumps(cfg))
    return lan


def add_client(lan: Lan, iface: str) -> str:
    """A DHCP client interface of its own MAC in the client namespace (a macvlan on
    eth0); returns its MAC."""
    lan.client.run("ip", "link", "add", iface, "link", "eth0", "type", "macvlan", "mode", "bridge")
    lan.client.run("ip", "link", "set", iface, "up")
    return lan.mac(iface)


class Binding(NamedTuple):
    """What a DHCP client was bound to: the address and the lease time it was given."""
    ip: str
    lease_seconds: int


def udhcpc_binding(lan: Lan, iface: str, requested: str | None = None) -> Binding | None:
    """Run busybox udhcpc once on `iface` (asking for `requested`); what it was bound
    to, or None."""
    name = f"udhcpc-{iface}-{uuid.uuid4().hex[:6]}"
    lan.udhcpc(iface, name=name, args=("-r", requested) if requested else ())
    out = lan.tmp / f"{name}.out"
    bound = [ln.split() for ln in (out.read_text().splitlines() if out.exists() else [])
             if ln.startswith("bound ")]
    return Binding(bound[-1][1], int(bound[-1][3])) if bound else None


def udhcpc_lease(lan: Lan, iface: str, requested: str | None = None) -> str | None:
    """The address udhcpc (run once on `iface`) was bound to, or None."""
    binding = udhcpc_binding(lan, iface, requested)
    return binding.ip if binding else None


_HTTP = r"""
import json, ssl, sys, urllib.request, urllib.error
method, url, token, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
headers = {"Content-Type": "application/json"}
if token:
    headers["Authorization"] = "Bearer " + token
req = urllib.request.Request(url, method=method, headers=headers,
                             data=body.encode() if body else None)
try:
    r = urllib.request.urlopen(req, timeout=30, context=ssl._create_unverified_context())
    print(r.status); print(r.read().decode(), end="")
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode(), end="")
"""


def request(ns: Netns, method: str, url: str, *, token: str | None = None,
            body: Any = None) -> tuple[int, str]:
    """(status, body text as sent) of an HTTP request made from inside `ns`."""
    r = ns.run(sys.executable, "-c", _HTTP, method, url, token or "",
               json.dumps(body) if body is not None else "")
    status, _, text = r.stdout.partition("\n")
    return int(status), text


def api(ns: Netns, method: str, path: str, token: str, body: Any = None) -> Any:
    """The JSON answer of the REST API (on WEB) to an authenticated request; any
    status but 2xx fails with the answer."""
    status, text = request(ns, method, f"{WEB}/api/v1{path}", token=token, body=body)
    assert 200 <= status < 300, f"{method} {path}: {status} {text}"
    return json.loads(text) if text else None


def admin_token(db: Path, username: str = "admin") -> str:
    """An admin user and an API token of theirs (what an admin makes on the Tokens
    page); returns the secret."""
    conn = Store(db).conn()
    uid = users.create_user(conn, username, "desired-state-pw-1")
    return apitokens.create_token(conn, uid, "desired-state test")[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30,
             every: float = 0.2) -> T:
    """The first truthy value `probe()` returns; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def settings_events(ns: Netns, token: str, after_id: int = 0) -> list[dict]:
    """The settings.applied / settings.apply_failed events after event `after_id`,
    oldest first, as the API lists them."""
    rows = api(ns, "GET", "/events?kind=settings.appl*&limit=50", token)["items"]
    return [e for e in reversed(rows) if e["id"] > after_id]


def last_event_id(ns: Netns, token: str) -> int:
    rows = api(ns, "GET", "/events?limit=1", token)["items"]
    return rows[0]["id"] if rows else 0


def fresh_status(lan: Lan) -> dict:
    """serve's first status heartbeat written after this call."""
    asked = time.time()
    return wait_for("a status heartbeat of serve",
                    lambda: (lambda s: s if s.get("ts", 0) > asked else None)(lan.status()),
                    timeout=10)
