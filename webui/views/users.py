"""Users: the admins who may log in. Add one; remove one (not yourself, not the last)."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for

from appliance.domain import users
from appliance.errors import NixieError

from ..context import conn
from ..forms import ActionForm, UserForm
from .common import attach_error

bp = Blueprint("users", __name__, url_prefix="/users")


@bp.route("/", methods=["GET", "POST"])
def index():
    form = UserForm()
    if form.validate_on_submit():
        try:
            users.create_user(conn(), form.username.data.strip(), form.password.data)
        except NixieError as e:
            attach_error(form, e)
        else:
            flash(f"Admin {form.username.data.strip()} added.", "ok")
            return redirect(url_for("users.index"))
    return render_template("users.html", form=form, users=users.list_users(conn()),
                           me=g.user["id"], action=ActionForm()), (400 if form.errors else 200)


@bp.post("/<username>/remove")
def remove(username: str):
    ActionForm()  # the guard checked the CSRF token
    try:
        users.remove_user(conn(), username, acting_user_id=g.user["id"])
    except NixieError as e:
        flash(str(e), "error")
    else:
        flash(f"Admin {username} removed.", "ok")
    return redirect(url_for("users.index"))
