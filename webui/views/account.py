"""Account: the logged-in admin changes their password (the current one is asked).
Every other session of theirs ends; this one goes on."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, session, url_for

from appliance.domain import users
from appliance.errors import NixieError

from ..context import conn
from ..forms import PasswordForm
from .common import attach_error

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.route("/", methods=["GET", "POST"])
def index():
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            stamp = users.change_password(conn(), g.user["id"], form.current_password.data,
                                          form.new_password.data)
        except NixieError as e:
            attach_error(form, e)
        else:
            session["stamp"] = stamp  # this session stays; the others end
            flash("Password changed. Your other sessions are logged out.", "ok")
            return redirect(url_for("account.index"))
    return render_template("account.html", form=form), (400 if form.errors else 200)
