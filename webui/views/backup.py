"""The Backup page: download a backup, upload one to restore (checked whole, then restored by
nixie serve at its next start), Nix store garbage collection on demand, and disk use."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from appliance.errors import NixieError
from appliance.nix import gc

from ..api.backup import archive_response, gc_state, stage_upload
from ..context import config, conn
from ..forms import ActionForm, RestoreForm
from .common import attach_error

bp = Blueprint("backup", __name__, url_prefix="/backup")

RESTORE_PATHS = ("/backup/restore", "/api/v1/backup/restore")


def raise_body_limit() -> None:
    """Before the guard reads a form (its CSRF token): an archive may be larger than any
    other form (`web.max_restore_bytes`; the HTTP server has the same limit per path)."""
    if request.path in RESTORE_PATHS:
        request.max_content_length = config().web.max_restore_bytes


def _page(form: RestoreForm, status: int = 200):
    return render_template("backup.html", form=form, action=ActionForm(), gc=gc_state(),
                           state_dir=config().state_dir,
                           max_restore=config().web.max_restore_bytes), status


@bp.get("/")
def index():
    return _page(RestoreForm(formdata=None))


@bp.post("/download")
def download():
    ActionForm().validate_on_submit()  # the guard has checked its CSRF token
    return archive_response()


@bp.post("/restore")
def restore():
    form = RestoreForm()
    if form.validate_on_submit():
        try:
            info = stage_upload(form.file.data.stream)
        except NixieError as e:
            attach_error(form, e)
        else:
            flash(info["message"], "ok")
            return redirect(url_for("backup.index"))
    return _page(form, 400)


@bp.post("/gc")
def gc_now():
    gc.request(conn())
    flash("Garbage collection asked for: nixie serve runs it within seconds.", "ok")
    return redirect(url_for("backup.index"))
