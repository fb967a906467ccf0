"""Machines waiting: MACs that PXE-booted without a host record (DHCP and HTTP boot saw
them), with "Add as host": pick a configuration, keep or change the prefilled name; the
host's build is queued and the machine's next boot retry boots it."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for

from appliance.domain import machines
from appliance.errors import NixieError

from ..context import conn
from ..forms import ActionForm, AdoptForm
from .common import attach_error

bp = Blueprint("machines", __name__, url_prefix="/machines")


def _adopt_form(m: dict, choices: list[tuple[str, str]], *, posted: bool = False) -> AdoptForm:
    """The machine's form (its fields prefixed by its MAC); `posted`: from the request."""
    prefix = m["mac"].replace(":", "")
    form = AdoptForm(prefix=prefix) if posted else AdoptForm(formdata=None, prefix=prefix)
    form.configuration.choices = choices
    if not posted:
        form.name.data = m["suggested_name"]
    return form


@bp.get("/")
def index():
    c = conn()
    waiting = machines.list_waiting(c)
    choices = machines.configuration_choices(c)
    forms = {m["mac"]: _adopt_form(m, choices) for m in waiting}
    return render_template("machines.html", machines=waiting, forms=forms, choices=choices,
                           action=ActionForm())


@bp.post("/<mac>/adopt")
def adopt(mac: str):
    c = conn()
    m = machines.get_waiting(c, mac)
    choices = machines.configuration_choices(c)
    form = _adopt_form(m, choices, posted=True)
    if form.validate_on_submit():
        flake_id, _, configuration = (form.configuration.data or "").partition(":")
        try:
            out = machines.adopt(c, m["mac"], configuration, flake=flake_id or None,
                                 name=form.name.data)
        except NixieError as e:
            attach_error(form, e)
        else:
            h, b = out["host"], out["build"]
            flash(f"{m['mac']} is host {h['name']} now; build {b['id']} is queued and its next "
                  "boot retry boots it.", "ok")
            return redirect(url_for("hosts.show", name=h["name"]))
    waiting = machines.list_waiting(c)
    forms = {w["mac"]: _adopt_form(w, choices) for w in waiting}
    forms[m["mac"]] = form
    return render_template("machines.html", machines=waiting, forms=forms, choices=choices,
                           action=ActionForm()), 400


@bp.post("/<mac>/forget")
def forget(mac: str):
    machines.forget(conn(), mac)
    flash(f"{mac} forgotten (it is listed again when it boots again).", "ok")
    return redirect(url_for("machines.index"))
