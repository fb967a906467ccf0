"""Flakes: add a URL (its evaluation is queued), see each flake's evaluation state,
its configurations or Nix's error, ask for another evaluation, remove one.

No request runs `nix`: `nixie serve`'s build worker evaluates queued flakes. While
one is queued or being evaluated the page follows it (static/app.js polls
/api/v1/flakes and reloads when a state changes; without JS a meta refresh).

Per flake: its build policy (follow the flake / manual), the credential nix fetches a
private flake with (written, never shown again) and its webhook (the secret is shown once,
on the page the POST answers). Each configuration lists the hosts bound to it, and whether
the flake declared them, they were adopted or bound by hand."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for

from appliance.domain import flakes, settings
from appliance.errors import NixieError
from appliance.nix import flake_access

from ..context import config, conn
from ..forms import ActionForm, FlakeCredentialForm, FlakeForm, FlakePolicyForm
from .common import attach_error

bp = Blueprint("flakes", __name__, url_prefix="/flakes")

PENDING = ("queued", "evaluating")
REFRESH_SECONDS = 3  # the page's meta refresh while an evaluation is pending (no JS)


def bound_attrs() -> dict[str, dict[str, list[dict]]]:
    """flake URL -> attribute -> the hosts bound to it (name, source, state, generation)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in conn().execute("SELECT name, flake, attr, source, state, current_generation "
                            "FROM hosts ORDER BY name"):
        out.setdefault(r["flake"], {}).setdefault(r["attr"], []).append(dict(r))
    return out


def _page(form: FlakeForm, new_hook: dict | None = None, status: int = 200):
    rows = flakes.list_flakes(conn())
    return render_template("flakes.html", form=form, flakes=rows, bound=bound_attrs(),
                           action=ActionForm(), policy_form=FlakePolicyForm(formdata=None),
                           credential_form=FlakeCredentialForm(formdata=None), new_hook=new_hook,
                           pending=any(f["eval_state"] in PENDING for f in rows),
                           refresh_seconds=REFRESH_SECONDS,
                           serve_running=settings.serve_running(conn())), status


@bp.route("/", methods=["GET", "POST"])
def index():
    form = FlakeForm()
    if not form.is_submitted():
        form.build_policy.data = config().builder.flake_policy
    if form.validate_on_submit():
        try:
            f = flakes.add_flake(conn(), form.url.data,
                                 form.build_policy.data or config().builder.flake_policy)
        except NixieError as e:
            attach_error(form, e)
        else:
            flash(f"Flake {f['url']} added; evaluating it.", "ok")
            return redirect(url_for("flakes.index"))
    return _page(form, status=400 if form.errors else 200)


@bp.post("/<int:flake_id>/policy")
def set_policy(flake_id: int):
    form = FlakePolicyForm()
    if form.validate_on_submit():
        f = flakes.set_policy(conn(), str(flake_id), form.build_policy.data)
        flash(f"{f['url']}: " + ("builds follow the flake." if f["build_policy"] == "on_change"
                                 else "builds are manual."), "ok")
    else:
        flash("Pick a build policy.", "error")
    return redirect(url_for("flakes.index") + f"#flake-{flake_id}")


@bp.post("/<int:flake_id>/credential")
def set_credential(flake_id: int):
    form = FlakeCredentialForm()
    f = flakes.get_flake(conn(), str(flake_id))
    if form.validate_on_submit():
        try:
            kind = flake_access.store_credential(config().state_dir, f["id"], form.kind.data,
                                                 form.secret.data)
        except NixieError as e:
            flash(str(e), "error")
        else:
            flakes.set_credential_kind(conn(), f["id"], kind)
            flakes.request_evaluation(conn(), str(f["id"]))
            flash(f"{f['url']}: " + ("credential removed" if kind == "none" else
                                     "credential stored (it is not shown again)")
                  + "; evaluating it again.", "ok")
    else:
        flash("Pick a credential kind.", "error")
    return redirect(url_for("flakes.index") + f"#flake-{flake_id}")


@bp.post("/<int:flake_id>/hook")
def new_hook(flake_id: int):
    f = flakes.get_flake(conn(), str(flake_id))
    if not ActionForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(url_for("flakes.index"))
    secret = flake_access.new_hook_secret(config().state_dir, f["id"])
    flakes.set_hook_enabled(conn(), f["id"], True)
    hook = {"flake_id": f["id"], "secret": secret,
            "url": url_for("api.flake_hook", flake_id=f["id"], _external=True)}
    return _page(FlakeForm(formdata=None), new_hook=hook)


@bp.post("/<int:flake_id>/hook/off")
def hook_off(flake_id: int):
    f = flakes.get_flake(conn(), str(flake_id))
    flake_access.remove_hook_secret(config().state_dir, f["id"])
    flakes.set_hook_enabled(conn(), f["id"], False)
    flash(f"{f['url']}: webhook off.", "ok")
    return redirect(url_for("flakes.index") + f"#flake-{flake_id}")


@bp.post("/<int:flake_id>/refresh")
def refresh_one(flake_id: int):
    f = flakes.request_evaluation(conn(), str(flake_id))
    flash(f"Evaluating {f['url']} again.", "ok")
    return redirect(url_for("flakes.index"))


@bp.post("/<int:flake_id>/remove")
def remove(flake_id: int):
    f = flakes.get_flake(conn(), str(flake_id))
    flakes.remove_flake(conn(), f["url"])
    flake_access.remove_files(config().state_dir, f["id"])
    flash(f"Flake {f['url']} removed.", "ok")
    return redirect(url_for("flakes.index"))
