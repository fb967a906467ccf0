"""Flakes: add a URL (its evaluation is queued), see each flake's evaluation state,
its configurations or Nix's error, ask for another evaluation, remove one.

No request runs `nix`: `nixie serve`'s build worker evaluates queued flakes. While
one is queued or being evaluated the page follows it (static/app.js polls
/api/v1/flakes and reloads when a state changes; without JS a meta refresh)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for

from appliance.domain import flakes, settings
from appliance.errors import NixieError

from ..context import conn
from ..forms import ActionForm, FlakeForm
from .common import attach_error

bp = Blueprint("flakes", __name__, url_prefix="/flakes")

PENDING = ("queued", "evaluating")
REFRESH_SECONDS = 3  # the page's meta refresh while an evaluation is pending (no JS)


def bound_attrs() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in conn().execute("SELECT flake, attr FROM hosts"):
        out.setdefault(r["flake"], set()).add(r["attr"])
    return out


@bp.route("/", methods=["GET", "POST"])
def index():
    form = FlakeForm()
    if form.validate_on_submit():
        try:
            f = flakes.add_flake(conn(), form.url.data)
        except NixieError as e:
            attach_error(form, e)
        else:
            flash(f"Flake {f['url']} added; evaluating it.", "ok")
            return redirect(url_for("flakes.index"))
    rows = flakes.list_flakes(conn())
    return render_template("flakes.html", form=form, flakes=rows, bound=bound_attrs(),
                           action=ActionForm(), pending=any(f["eval_state"] in PENDING for f in rows),
                           refresh_seconds=REFRESH_SECONDS, serve_running=settings.serve_running(conn())), \
        (400 if form.errors else 200)


@bp.post("/<int:flake_id>/refresh")
def refresh_one(flake_id: int):
    f = flakes.request_evaluation(conn(), str(flake_id))
    flash(f"Evaluating {f['url']} again.", "ok")
    return redirect(url_for("flakes.index"))


@bp.post("/<int:flake_id>/remove")
def remove(flake_id: int):
    f = flakes.get_flake(conn(), str(flake_id))
    flakes.remove_flake(conn(), f["url"])
    flash(f"Flake {f['url']} removed.", "ok")
    return redirect(url_for("flakes.index"))
