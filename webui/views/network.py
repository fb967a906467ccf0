"""Network: the router's interfaces, and changing them (LAN address and bridge ports,
WAN, static routes) as a transaction of `appliance.router.network`: applied a moment
after the page answers, shown with a countdown (static/app.js), kept only when
confirmed in time, else rolled back by the router itself, also when the change cut the
browser off."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from appliance.errors import InvalidInput, NixieError
from appliance.router import linkinfo, network

from ..context import config, conn
from ..forms import ActionForm, NetworkForm
from .common import attach_error

bp = Blueprint("network", __name__, url_prefix="/network")
FIELDS = {"interfaces": "lan_interface"}


def _field_of(err: InvalidInput) -> str | None:
    """The form field an error of the network engine is about ('routes[2]' -> routes)."""
    name = getattr(err, "field", None)
    return FIELDS.get(name, name.split("[")[0]) if name else None


def _change_shown() -> dict | None:
    """The change the page is about: ?change=ID, else the one waiting for confirmation."""
    wanted = (request.args.get("change") or "").strip()[:32]
    if wanted:
        try:
            return network.get_transaction(conn(), wanted)
        except NixieError:
            return None
    return network.pending(conn())


@bp.route("/", methods=["GET", "POST"])
def index():
    cfg = config()
    form = NetworkForm()
    if not form.is_submitted():
        form.fill(network.load_settings(conn(), cfg).to_dict())
        form.confirm_seconds.data = cfg.network.confirm_seconds
    if form.validate_on_submit():
        try:
            txn = network.apply_settings(conn(), cfg, form.settings(), form.confirm_seconds.data,
                                         apply_delay=network.WEB_APPLY_DELAY)
        except InvalidInput as e:
            e.field = _field_of(e)
            attach_error(form, e)
        except NixieError as e:
            flash(str(e), "error")
        else:
            flash(f"Applying {len(txn['ops'])} change(s): confirm them below, or they roll back "
                  "by themselves.", "ok")
            return redirect(url_for("network.index", change=txn["id"]))
    roles = {cfg.lan.interface: "LAN"}
    if cfg.wan.interface:
        roles[cfg.wan.interface] = "WAN"
    return render_template("network.html", interfaces=linkinfo.list_interfaces(), roles=roles,
                           cfg=cfg, form=form, change=_change_shown(), action=ActionForm()), \
        (400 if form.errors else 200)


@bp.post("/changes/<txn_id>/confirm")
def confirm(txn_id: str):
    ActionForm()  # the guard checked the CSRF token
    try:
        network.confirm(conn(), txn_id)
    except NixieError as e:
        flash(str(e), "error")
    else:
        flash("Network change confirmed: it stays, and is saved.", "ok")
    return redirect(url_for("network.index", change=txn_id))


@bp.post("/changes/<txn_id>/revert")
def revert(txn_id: str):
    try:
        network.revert(conn(), config(), txn_id)
    except NixieError as e:
        flash(str(e), "error")
    else:
        flash("Network change reverted.", "ok")
    return redirect(url_for("network.index", change=txn_id))
