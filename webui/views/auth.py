"""Log in and out. Failed logins slow down the (user name, address) pair that
fails, progressively, and are capped per address (appliance/domain/loginlimits.py);
they are recorded as events."""

from __future__ import annotations

import math

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for

from appliance.domain import events, users

from ..context import conn
from ..forms import ActionForm, LoginForm
from ..security import login_user, safe_next

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if g.get("user") and request.method == "GET":
        return redirect(safe_next(request.args.get("next")) or url_for("dashboard.index"))
    form = LoginForm()
    status = 200
    limits = current_app.extensions["nixie_login_limits"]
    if form.validate_on_submit():
        ip = request.remote_addr or "?"
        username = form.username.data.strip()
        wait = limits.retry_after(conn(), ip, username)
        if wait > 0:
            form.username.errors = [f"Too many failed attempts. Try again in {math.ceil(wait)} s."]
            events.record(conn(), "auth.login_throttled",
                          f"login for {username!r} from {ip} refused: too many failures",
                          level="warning", ip=ip)
            return (render_template("login.html", form=form), 429,
                    {"Retry-After": str(math.ceil(wait))})
        else:
            uid = users.verify_password(conn(), username, form.password.data)
            if uid is None:
                limits.failed(conn(), ip, username)
                events.record(conn(), "auth.login_failed", f"failed login for {username!r} from {ip}",
                              level="warning", ip=ip)
                form.password.errors = ["Wrong user name or password."]
                status = 401
            else:
                limits.succeeded(conn(), ip, username)
                login_user(uid, username)
                events.record(conn(), "auth.login", f"{username} logged in from {ip}", ip=ip)
                return redirect(safe_next(request.args.get("next")) or url_for("dashboard.index"))
    elif form.is_submitted():
        status = 400
    return render_template("login.html", form=form), status


@bp.post("/logout")
def logout():
    ActionForm()  # the CSRF check already ran in the guard
    user = session.get("user")
    session.clear()
    if user:
        events.record(conn(), "auth.logout", f"{user} logged out")
    return redirect(url_for("auth.login"))
