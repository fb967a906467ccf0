"""API tokens: create (the secret is shown once) and revoke."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for

from appliance.domain import apitokens
from appliance.errors import NixieError

from ..context import conn
from ..forms import ActionForm, TokenForm
from .common import attach_error

bp = Blueprint("tokens", __name__, url_prefix="/tokens")


@bp.route("/", methods=["GET", "POST"])
def index():
    form = TokenForm()
    secret = None
    if form.validate_on_submit():
        try:
            tok, secret = apitokens.create_token(conn(), g.user["id"], form.name.data)
        except NixieError as e:
            attach_error(form, e)
        else:
            form = TokenForm(formdata=None)
    return render_template("tokens.html", form=form, tokens=apitokens.list_tokens(conn()),
                           secret=secret, action=ActionForm()), (400 if form.errors else 200)


@bp.post("/<int:token_id>/revoke")
def revoke(token_id: int):
    t = apitokens.revoke_token(conn(), token_id)
    flash(f"Token {t['name']!r} revoked.", "ok")
    return redirect(url_for("tokens.index"))
