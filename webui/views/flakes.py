"""Flakes: add a URL, refresh it with the real `nix`, see its configurations and last error."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for

from appliance.domain import flakes
from appliance.errors import NixieError
from appliance.nix import command as nix
from appliance.nix import flake_eval

from ..context import config, conn
from ..forms import ActionForm, FlakeForm
from .common import attach_error

bp = Blueprint("flakes", __name__, url_prefix="/flakes")


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
            refresh(f["id"])
            return redirect(url_for("flakes.index"))
    return render_template("flakes.html", form=form, flakes=flakes.list_flakes(conn()),
                           bound=bound_attrs(), action=ActionForm()), (400 if form.errors else 200)


def refresh(flake_id: int) -> dict:
    f = flakes.get_flake(conn(), str(flake_id))
    r = flake_eval.refresh_flake(conn(), nix.Nix.from_config(config()), f["id"])
    if r["last_error"]:
        flash(f"Refreshing {r['url']} failed; see the error below.", "error")
    else:
        flash(f"{r['url']}: {len(r['configurations'])} configuration(s) found.", "ok")
    return r


@bp.post("/<int:flake_id>/refresh")
def refresh_one(flake_id: int):
    refresh(flake_id)
    return redirect(url_for("flakes.index"))


@bp.post("/<int:flake_id>/remove")
def remove(flake_id: int):
    f = flakes.get_flake(conn(), str(flake_id))
    flakes.remove_flake(conn(), f["url"])
    flash(f"Flake {f['url']} removed.", "ok")
    return redirect(url_for("flakes.index"))
