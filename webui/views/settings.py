"""Settings: builder, substituters, DHCP, boot menu. Stored as overrides of the config file."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for

from appliance.domain import settings
from appliance.errors import NixieError
from appliance.state.db import now

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
        since = now()
        try:
            settings.update(cfg, conn(), form.values(), who=g.user["username"])
        except NixieError as e:
            attach_error(form, e)
        else:
            flash(*_outcome(since))
            return redirect(url_for("settings.index"))
    return render_template("settings.html", form=form, overridden=set(settings.overrides(conn())),
                           config_path=cfg.path), (400 if form.errors else 200)


def _outcome(since: float) -> tuple[str, str]:
    """(message, category) of a save at `since`: applied by the running `nixie serve`
    (it applies within 2 s), refused by it, or left for serve to apply when it starts."""
    c = conn()
    if (settings.last_change(c) or {}).get("at", 0) < since:
        return "Settings saved; nothing changed.", "ok"
    if not settings.serve_running(c):
        return "Settings saved; nixie serve is not running: they apply when it starts.", "ok"
    st = settings.wait_applied(c, since)
    if st is None:
        return "Settings saved, but nixie serve has not applied them yet; see Events.", "error"
    if not st["ok"]:
        return (f"Settings saved, but not applied: {st['error']}. "
                "The services keep their previous settings.", "error")
    return f"Settings saved and applied ({', '.join(st['services']) or 'no service'}).", "ok"
