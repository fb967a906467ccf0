"""DHCPv4 and DHCPv6 leases (active, expired; one family with ?family=4|6) and
reservations (hosts bound to MACs)."""

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
    family = {"4": 4, "6": 6}.get(request.args.get("family", ""))
    c = conn()
    if view == "reservations":
        q = (request.args.get("q") or "").strip()[:100] or None
        total = hosts.count_hosts(c, search=q)
        rows = hosts.list_hosts(c, search=q, limit=LEASE_PAGE, offset=(page - 1) * LEASE_PAGE)
    else:
        total = leases.count_leases(c, include_expired=view == "all", family=family)
        rows = leases.list_leases(c, include_expired=view == "all", limit=LEASE_PAGE,
                                  offset=(page - 1) * LEASE_PAGE, family=family)
    return render_template("leases.html", view=view, rows=rows, page=page, total=total,
                           family=family,
                           pages=max(1, -(-total // LEASE_PAGE)), q=request.args.get("q", ""))
