"""Template filters and globals: times, badges, progress."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from flask import Flask, g, request, url_for

STATE_BADGE = {
    "unknown": "muted", "booting": "info", "booted": "ok", "installing": "info",
    "installed": "ok", "failed": "bad",
    "queued": "muted", "running": "info", "succeeded": "ok", "cancelled": "muted",
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
    """0..1 from a build's progress JSON, whichever shape the worker writes
    ({"percent": n}, {"done": n, "total": m}, {"built": n, "expected": m})."""
    if isinstance(progress, str):
        try:
            progress = json.loads(progress)
        except ValueError:
            return None
    if not isinstance(progress, dict):
        return None
    if isinstance(progress.get("percent"), int | float):
        return max(0.0, min(1.0, progress["percent"] / 100))
    for done_k, total_k in (("done", "total"), ("built", "expected"), ("done", "expected")):
        d, t = progress.get(done_k), progress.get(total_k)
        if isinstance(d, int | float) and isinstance(t, int | float) and t > 0:
            return max(0.0, min(1.0, d / t))
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
       ("flakes.index", "Flakes", "❄"), ("builds.index", "Builds", "⚙"),
       ("leases.index", "Leases", "⇄"), ("network.index", "Network", "⌁"),
       ("events.index", "Events", "☰"), ("settings.index", "Settings", "✎"),
       ("tokens.index", "API tokens", "◈")]


def nav_links() -> list[tuple[str, str, str, str]]:
    """(area, url, label, icon) of the sidebar, built once per app."""
    from flask import current_app

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
    app.jinja_env.globals["page_url"] = page_url
    app.jinja_env.globals["nav_links"] = nav_links

    @app.context_processor
    def inject():
        return {"current_user": g.get("user")}
