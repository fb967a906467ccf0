"""Template filters and globals: times, badges, progress."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from flask import Flask, current_app, g, request, url_for

from appliance.nix.bootmedia import shell_one_liner

from .charts import duration
from .context import config

STATE_BADGE = {
    "unknown": "muted", "booting": "info", "booted": "ok", "installing": "info",
    "installed": "ok", "failed": "bad",
    "queued": "muted", "evaluating": "info", "running": "info", "succeeded": "ok", "cancelled": "muted",
    "bound": "ok", "offered": "info", "released": "muted", "declined": "warn", "expired": "muted",
    "debug": "muted", "info": "info", "warning": "warn", "error": "bad",
    "starting": "info", "stopped": "muted", "idle": "muted", "backoff": "warn",
    "up": "ok", "down": "bad",
}


def ts(t: float | None) -> str:
    if not t:
        return "–"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(t: float | None) -> str:
    if not t:
        return "never"
    d = time.time() - t
    if d < 0:
        d = -d
        for unit, s in (("d", 86400), ("h", 3600), ("min", 60)):
            if d >= s:
                return f"in {int(d // s)} {unit}"
        return f"in {int(d)} s"
    for unit, s in (("d", 86400), ("h", 3600), ("min", 60)):
        if d >= s:
            return f"{int(d // s)} {unit} ago"
    return f"{int(d)} s ago"


def progress_fraction(progress: Any) -> float | None:
    """0..1 from a build's progress JSON. The build worker writes
    {"builds_done", "builds_expected", "paths_fetched", "paths_expected", ...};
    {"percent": n} and {"done": n, "total": m} are understood too."""
    if isinstance(progress, str):
        try:
            progress = json.loads(progress)
        except ValueError:
            return None
    if not isinstance(progress, dict):
        return None

    def num(k: str) -> float:
        v = progress.get(k)
        return v if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else 0

    if num("percent") or progress.get("percent") == 0:
        return max(0.0, min(1.0, num("percent") / 100))
    done = num("builds_done") + num("paths_fetched") + num("done")
    total = num("builds_expected") + num("paths_expected") + num("total")
    if total > 0:
        return max(0.0, min(1.0, done / total))
    return None


def progress_phase(progress: Any) -> str | None:
    if isinstance(progress, str):
        try:
            progress = json.loads(progress)
        except ValueError:
            return None
    if isinstance(progress, dict):
        running = progress.get("running") or []
        parts = [str(progress["phase"])] if progress.get("phase") else []
        if isinstance(running, list) and running:
            parts.append(str(running[-1]))
        return " · ".join(parts) or None
    return None


def page_url(**changes: Any) -> str:
    """This page's URL with some query arguments changed (None removes one)."""
    args = request.args.to_dict()
    for k, v in changes.items():
        if v is None or v == "":
            args.pop(k, None)
        else:
            args[k] = v
    return url_for(request.endpoint, **(request.view_args or {}), **args)


NAV = [("dashboard.index", "Dashboard", "▦"), ("hosts.index", "Hosts", "▤"),
       ("machines.index", "Machines waiting", "⏻"),
       ("flakes.index", "Flakes", "❄"), ("builds.index", "Builds", "⚙"),
       ("leases.index", "Leases", "⇄"), ("network.index", "Network", "⌁"),
       ("events.index", "Events", "☰"), ("settings.index", "Settings", "✎"),
       ("tokens.index", "API tokens", "◈")]
NAV += [("vpn.index", "VPN", "⛨"), ("users.index", "Users", "☺"),
        ("media.index", "Boot media", "⊙")]
NAV += [("backup.index", "Backup", "⛁")]


def nav_links() -> list[tuple[str, str, str, str]]:
    """(area, url, label, icon) of the sidebar, built once per app."""
    links = current_app.extensions.get("nixie_nav")
    if links is None:
        links = [(ep.split(".")[0], url_for(ep), label, icon) for ep, label, icon in NAV]
        current_app.extensions["nixie_nav"] = links
    return links


def init_app(app: Flask) -> None:
    app.jinja_env.filters["ts"] = ts
    app.jinja_env.filters["ago"] = ago
    app.jinja_env.filters["badge"] = lambda s: STATE_BADGE.get(str(s), "muted")
    app.jinja_env.filters["progress"] = progress_fraction
    app.jinja_env.filters["phase"] = progress_phase
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.globals["page_url"] = page_url
    app.jinja_env.globals["nav_links"] = nav_links
    app.jinja_env.globals["ipxe_one_liner"] = lambda: shell_one_liner(config())

    @app.context_processor
    def inject():
        return {"current_user": g.get("user")}
