"""Settings: builder, substituters, DHCP, boot menu. Stored as overrides of the
config file; the keys the deployment locks are shown read-only. A save reports
what the running `nixie serve` did with it (webui/apply_report.py)."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for

from appliance.domain import settings
from appliance.errors import NixieError
from appliance.state.db import now

from .. import apply_report
from ..context import conn, ctx
from ..forms import SettingsForm
from .common import attach_error

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/", methods=["GET", "POST"])
def index():
    cfg = ctx().config
    form = SettingsForm()
    effective = settings.effective_values(cfg, conn())
    locked = settings.locked(cfg)
    if not form.is_submitted():
        form.fill(effective)
    form.lock(locked, effective)
    if form.validate_on_submit():
        since = now()
        try:
            settings.update(cfg, conn(), {k: v for k, v in form.values().items() if k not in locked},
                            who=g.user["username"])
        except NixieError as e:
            attach_error(form, e)
        else:
            report = apply_report.after_save(conn(), since)
            flash(report.message, report.category)
            return redirect(url_for("settings.index"))
    return render_template("settings.html", form=form, overridden=set(settings.overrides(conn())),
                           locked=locked, config_path=cfg.path), (400 if form.errors else 200)
