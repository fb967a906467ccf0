"""The event log with filters (kind, host, level) and pages (newest first)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from appliance.domain import events, hosts
from appliance.errors import NixieError

from ..context import conn
from .common import PAGE_SIZE

bp = Blueprint("events", __name__, url_prefix="/events")


@bp.get("/")
def index():
    kind = (request.args.get("kind") or "").strip()[:64] or None
    host = (request.args.get("host") or "").strip()[:63] or None
    level = request.args.get("level") or None
    if level not in events.LEVELS:
        level = None
    before = request.args.get("before")
    before_id = int(before) if before and before.isdigit() else None
    error = None
    host_id = None
    if host:
        try:
            host_id = hosts.get_host(conn(), host)["id"]
        except NixieError as e:
            error = str(e)
    rows = [] if error else events.search(conn(), kind=kind, host_id=host_id, level=level,
                                          before_id=before_id, limit=PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    kinds = [r[0] for r in conn().execute("SELECT DISTINCT kind FROM events ORDER BY kind LIMIT 200")]
    return render_template("events.html", rows=rows, more=more, kind=kind or "", host=host or "",
                           level=level or "", levels=events.LEVELS, kinds=kinds, error=error,
                           next_before=rows[-1]["id"] if rows and more else None,
                           paged=before_id is not None)
