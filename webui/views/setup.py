"""First run: the setup wizard. Nothing else answers until it is done. It asks
for the one-time setup code `nixie serve` printed in its log and wrote to
state_dir/setup_code (appliance/domain/setupcode.py), so the first browser to
arrive does not become the admin; wrong codes are throttled like failed logins.
Keys the deployment locks are shown read-only; the answers are applied like a
Settings save (webui/apply_report.py)."""

from __future__ import annotations

import math

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from appliance.domain import events, settings, tls_cert
from appliance.errors import Conflict, NixieError
from appliance.state.db import now

from .. import apply_report
from ..context import conn, ctx
from ..forms import SetupForm
from ..security import login_user
from .common import attach_error

bp = Blueprint("setup", __name__)

WIZARD_KEYS = (*SetupForm.KEYS.values(), "dhcp.range")
CODE_NAME = "(setup code)"  # the name wrong setup codes count under in the login limits


@bp.context_processor
def web_certificate():
    """The admin UI's TLS certificate (_tls_fingerprint.html shows its fingerprint)."""
    cfg = ctx().config
    return {"web_cert": tls_cert.info(cfg) if cfg.web.tls else None}


@bp.route("/setup", methods=["GET", "POST"])
def wizard():
    if settings.is_setup_complete(conn()):
        return redirect(url_for("auth.login"))
    cfg = ctx().config
    form = SetupForm()
    locked = {k: v for k, v in settings.locked(cfg).items() if k in WIZARD_KEYS}
    effective = settings.effective_values(cfg, conn())
    if not form.is_submitted():
        form.show(effective, WIZARD_KEYS)
    form.lock(locked, effective)
    if form.validate_on_submit():
        values = {
            "lan.interface": form.lan_interface.data.strip(),
            "wan.interface": (form.wan_interface.data or "").strip() or None,
            "dhcp.mode": form.dhcp_mode.data,
            "builder.kind": form.builder_kind.data,
            "builder.uri": (form.builder_uri.data or "").strip() or None,
        }
        if form.dhcp_mode.data == "authoritative" or form.dhcp_first.data or form.dhcp_last.data:
            values["dhcp.range"] = [(form.dhcp_first.data or "").strip(),
                                    (form.dhcp_last.data or "").strip()]
        since = now()
        limits = current_app.extensions["nixie_login_limits"]
        ip = request.remote_addr or "?"
        wait = limits.retry_after(conn(), ip, CODE_NAME)
        if wait > 0:
            form.setup_code.errors = [f"Too many wrong setup codes. Try again in {math.ceil(wait)} s."]
            return (render_template("setup.html", form=form, cfg=cfg), 429,
                    {"Retry-After": str(math.ceil(wait))})
        try:
            uid = settings.complete_setup(cfg, conn(), username=form.username.data.strip(),
                                          password=form.password.data,
                                          values={k: v for k, v in values.items() if k not in locked},
                                          setup_code=form.setup_code.data)
        except Conflict:
            return redirect(url_for("auth.login"))
        except NixieError as e:
            if getattr(e, "field", None) == "setup_code":
                limits.failed(conn(), ip, CODE_NAME)
                events.record(conn(), "setup.code_refused",
                              f"setup wizard refused from {ip}: wrong setup code",
                              level="warning", ip=ip)
            attach_error(form, e)
        else:
            current_app.extensions["nixie_setup_done"] = True
            login_user(uid, form.username.data.strip())
            report = apply_report.after_save(conn(), since)
            if report.outcome != "unchanged":  # else the config file's values run as they are
                flash(report.message, report.category)
            return redirect(url_for("dashboard.index", welcome=1))
    return render_template("setup.html", form=form, cfg=cfg), (400 if form.errors else 200)
