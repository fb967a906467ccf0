"""Builds: the queue, one build's status, progress and live log."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from appliance.domain import builds, hosts
from appliance.errors import NixieError

from ..context import conn
from ..forms import ActionForm, BuildForm
from .common import attach_error

bp = Blueprint("builds", __name__, url_prefix="/builds")


@bp.route("/", methods=["GET", "POST"])
def index():
    form = BuildForm()
    if not form.is_submitted() and request.args.get("host"):
        form.host.data = request.args["host"][:63]
    if form.validate_on_submit():
        try:
            b = builds.enqueue(conn(), form.host.data.strip())
        except NixieError as e:
            e.field = "host"
            attach_error(form, e)
        else:
            flash(f"Build {b['id']} of {b['host_name']} queued.", "ok")
            return redirect(url_for("builds.show", build_id=b["id"]))
    host = (request.args.get("filter") or "").strip()[:63] or None
    return render_template("builds/index.html", form=form,
                           builds=builds.list_builds(conn(), host_name=host, limit=100),
                           host_names=hosts.list_host_names(conn()),
                           filter=host), (400 if form.errors else 200)


@bp.get("/<int:build_id>")
def show(build_id: int):
    b = builds.get_build(conn(), build_id)
    return render_template("builds/show.html", build=b, final=b["status"] in builds.FINAL,
                           action=ActionForm())


@bp.post("/<int:build_id>/cancel")
def cancel(build_id: int):
    ActionForm()  # the CSRF check already ran in the guard
    try:
        b = builds.cancel(conn(), build_id)
    except NixieError as e:
        flash(str(e), "error")
    else:
        flash(f"Build {b['id']} of {b['host_name']} cancelled.", "ok")
    return redirect(url_for("builds.show", build_id=build_id))
