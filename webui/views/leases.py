"""DHCP leases (active, expired) and reservations (hosts bound to MACs)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from appliance.domain import hosts, leases

from ..context import conn
from .common import page_arg

bp = Blueprint("leases", __name__, url_prefix="/leases")
LEASE_PAGE = 100


@bp.get("/")
def index():
    view = request.args.get("view", "active")
    if view not in ("active", "all", "reservations"):
        view = "active"
    page = page_arg(request.args.get("page"))
    c = conn()
    if view == "reservations":
        q = (request.args.get("q") or "").strip()[:100] or None
        total = hosts.count_hosts(c, search=q)
        rows = hosts.list_hosts(c, search=q, limit=LEASE_PAGE, offset=(page - 1) * LEASE_PAGE)
    else:
        total = leases.count_leases(c, include_expired=view == "all")
        rows = leases.list_leases(c, include_expired=view == "all", limit=LEASE_PAGE,
                                  offset=(page - 1) * LEASE_PAGE)
    return render_template("leases.html", view=view, rows=rows, page=page, total=total,
                           pages=max(1, -(-total // LEASE_PAGE)), q=request.args.get("q", ""))
