"""Settings: builder, substituters, DHCP, boot menu. Stored as overrides of the config file."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for

from appliance.domain import settings
from appliance.errors import NixieError

from ..context import conn, ctx
from ..forms import SettingsForm
from .common import attach_error

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/", methods=["GET", "POST"])
def index():
    cfg = ctx().config
    form = SettingsForm()
    if not form.is_submitted():
        form.fill(settings.effective_values(cfg, conn()))
    if form.validate_on_submit():
        try:
            settings.update(cfg, conn(), form.values(), who=g.user["username"])
        except NixieError as e:
            attach_error(form, e)
        else:
            flash("Settings saved.", "ok")
            return redirect(url_for("settings.index"))
    return render_template("settings.html", form=form, overridden=set(settings.overrides(conn())),
                           config_path=cfg.path), (400 if form.errors else 200)
