"""Boot media: the page that writes ISO / USB / EFI media (per host or generic) and lists and
revokes their tokens; the host page links here with its host chosen (`?host=NAME`)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from appliance.domain import hosts, media
from appliance.errors import NixieError
from appliance.nix import bootmedia

from ..api.media import media_response
from ..context import config, conn
from ..forms import ActionForm, MediaForm, options
from ..security import safe_next
from .common import attach_error

bp = Blueprint("media", __name__, url_prefix="/media")


def media_form(host: str | None = None) -> MediaForm:
    form = MediaForm()
    names = hosts.list_host_names(conn())
    form.host.choices = options(("", "(generic: any machine)"), *names)
    if host is not None and not form.host.data:
        form.host.data = host
    form.url.choices = options(*((k, f"{k}: {v}") for k, v in bootmedia.media_urls(config()).items()))
    return form


def page(form: MediaForm, status: int = 200):
    return render_template("media.html", form=form, tokens=media.list_tokens(conn()),
                           action=ActionForm()), status


@bp.route("/", methods=["GET", "POST"])
def index():
    form = media_form(request.args.get("host"))
    if not form.validate_on_submit():
        return page(form, 400 if form.errors else 200)
    try:
        static = bootmedia.Static.parse(form.address.data, form.gateway.data, form.dns.data)
        return media_response(form.host.data or None, form.format.data, form.url.data or "lan",
                              static, form.label.data or "")
    except NixieError as e:
        attach_error(form, e)
        return page(form, e.http_status if e.http_status >= 500 else 400)


@bp.post("/<int:token_id>/revoke")
def revoke(token_id: int):
    t = media.revoke_token(conn(), token_id)
    flash(f"Media token {t['id']} ({t['host'] or 'generic'}) revoked.", "ok")
    return redirect(safe_next(request.form.get("next")) or url_for("media.index"))
