"""Builds that follow the flake.

For every flake whose policy is `on_change` (`flakes.build_policy`), `reconcile`:
1. binds the hosts its configurations declare (`config.nixie.netboot.macs`, parsed at
   evaluation): a configuration whose MACs no host has yet becomes a host of its own name
   (`hosts.source` 'flake'); MACs another host already has are left to it;
2. queues a build of every host bound to one of its configurations (`hosts.flake` is the
   flake's URL, `hosts.attr` is `nixosConfigurations.<name>`) whose system's derivation
   (the toplevel's .drv, from the last evaluation) is not the one the router last built for
   it (`hosts.built_drv`). Unchanged configurations are not rebuilt; a host added to an
   evaluated flake (by hand, from the flake or adopted) is built at once; a host whose
   current generation already is that system takes the .drv without a build.

`nixie serve`'s build worker calls it after every evaluation and every second; it only reads
the database and writes rows, it never runs `nix`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from appliance.domain import builds, events, flakes, hosts
from appliance.errors import Conflict, InvalidInput
from appliance.state.db import transaction

PREFIX = "nixosConfigurations."


@dataclass
class Reconciled:
    bound: list[str] = field(default_factory=list)     # hosts made from declared MACs
    queued: list[int] = field(default_factory=list)    # builds queued
    adopted: list[str] = field(default_factory=list)   # hosts whose generation already matched


def host_name_for(configuration: str) -> str | None:
    name = re.sub(r"[^a-z0-9-]+", "-", configuration.lower()).strip("-")[:63].strip("-")
    try:
        return hosts.validate_name(name)
    except InvalidInput:
        return None


def bind_declared(conn: sqlite3.Connection, flake: dict[str, Any]) -> list[str]:
    """Hosts for the flake's configurations that declare MACs no host has yet."""
    made = []
    for configuration, macs in sorted(flake["macs"].items()):
        if not macs:
            continue
        q = ",".join("?" * len(macs))
        if conn.execute(f"SELECT 1 FROM host_macs WHERE mac IN ({q})", macs).fetchone():
            continue
        name = host_name_for(configuration)
        if name is None:
            continue
        try:
            hosts.add_host(conn, name, macs, flake["url"], PREFIX + configuration,
                           source="flake")
        except (Conflict, InvalidInput):  # a host by that name (by hand) stays as it is
            continue
        made.append(name)
    return made


def _current_toplevel(conn: sqlite3.Connection, host: sqlite3.Row) -> str | None:
    r = conn.execute("SELECT toplevel FROM generations WHERE host_id = ? AND number = ?",
                     (host["id"], host["current_generation"])).fetchone()
    return r[0] if r else None


def _queue_changed(conn: sqlite3.Connection, flake: dict[str, Any], out: Reconciled) -> None:
    tops = flake["toplevels"]
    if not tops:
        return
    rows = conn.execute("SELECT * FROM hosts WHERE flake = ? AND attr LIKE ?",
                        (flake["url"], PREFIX + "%")).fetchall()
    for h in rows:
        top = tops.get(h["attr"][len(PREFIX):]) or {}
        drv = top.get("drv")
        if not drv or h["built_drv"] == drv:
            continue
        with transaction(conn):
            if top.get("out") and _current_toplevel(conn, h) == top["out"]:
                conn.execute("UPDATE hosts SET built_drv = ? WHERE id = ?", (drv, h["id"]))
                out.adopted.append(h["name"])
                continue
            conn.execute("UPDATE hosts SET built_drv = ? WHERE id = ?", (drv, h["id"]))
            queued = conn.execute("SELECT 1 FROM builds WHERE host_id = ? AND status = 'queued'",
                                  (h["id"],)).fetchone()
        if queued:  # a build not started yet builds the newest revision anyway
            continue
        b = builds.enqueue(conn, h["name"])
        events.record(conn, "build.auto", f"build {b['id']} of {h['name']} queued: its system "
                      f"in {flake['url']} changed", host_id=h["id"],
                      data={"build": b["id"], "drv": drv})
        out.queued.append(b["id"])


def reconcile(conn: sqlite3.Connection) -> Reconciled:
    out = Reconciled()
    for f in flakes.list_flakes(conn):
        if f["build_policy"] != "on_change":
            continue
        out.bound += bind_declared(conn, f)
        _queue_changed(conn, f, out)
    return out
