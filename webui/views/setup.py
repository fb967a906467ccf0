"""First run: the setup wizard. Nothing else answers until it is done."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, url_for

from appliance.domain import settings
from appliance.errors import Conflict, NixieError

from ..context import conn, ctx
from ..forms import SetupForm
from ..security import login_user
from .common import attach_error

bp = Blueprint("setup", __name__)

FIELDS = {"lan.interface": "lan_interface", "wan.interface": "wan_interface",
          "dhcp.mode": "dhcp_mode", "dhcp.range": "dhcp_first", "builder.kind": "builder_kind",
          "builder.uri": "builder_uri", "username": "username", "password": "password"}


@bp.route("/setup", methods=["GET", "POST"])
def wizard():
    if settings.is_setup_complete(conn()):
        return redirect(url_for("auth.login"))
    cfg = ctx().config
    form = SetupForm()
    if not form.is_submitted():
        form.lan_interface.data = cfg.lan.interface
        form.wan_interface.data = cfg.wan.interface or ""
        form.dhcp_mode.data = cfg.dhcp.mode
        form.dhcp_first.data, form.dhcp_last.data = cfg.dhcp.range
        form.builder_kind.data = cfg.builder.kind
        form.builder_uri.data = cfg.builder.uri or ""
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
        try:
            uid = settings.complete_setup(cfg, conn(), username=form.username.data.strip(),
                                          password=form.password.data, values=values)
        except Conflict:
            return redirect(url_for("auth.login"))
        except NixieError as e:
            attach_error(form, e, FIELDS)
        else:
            current_app.extensions["nixie_setup_done"] = True
            login_user(uid, form.username.data.strip())
            return redirect(url_for("dashboard.index", welcome=1))
    return render_template("setup.html", form=form, cfg=cfg), (400 if form.errors else 200)
