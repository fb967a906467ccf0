"""VPN: WireGuard peers (appliance.router.vpn): list, add, remove; a peer's client config
to download and its QR code inline (what the WireGuard apps scan)."""

from __future__ import annotations

import base64

from flask import Blueprint, Response, flash, redirect, render_template, url_for

from appliance.errors import NixieError
from appliance.router import vpn

from ..context import config, conn
from ..forms import ActionForm, VpnPeerForm
from .common import attach_error

bp = Blueprint("vpn", __name__, url_prefix="/vpn")


@bp.route("/", methods=["GET", "POST"])
def index():
    form = VpnPeerForm()
    if form.validate_on_submit():
        try:
            peer = vpn.add_peer(conn(), config(), form.name.data.strip(),
                                (form.public_key.data or "").strip() or None)
        except NixieError as e:
            attach_error(form, e)
        else:
            flash(f"Peer {peer['name']} added at {peer['address']}.", "ok")
            return redirect(url_for("vpn.show", name=peer["name"]))
    return render_template("vpn/index.html", form=form, peers=vpn.list_peers(conn()),
                           cfg=config(), action=ActionForm()), (400 if form.errors else 200)


@bp.get("/<name>")
def show(name: str):
    c = conn()
    peer = dict(vpn.get_peer(c, name))
    client_config = qr = problem = None
    if peer["key_file"]:
        try:
            client_config = vpn.client_config(c, config(), name)
        except NixieError as e:
            problem = str(e)
        else:
            qr = base64.b64encode(vpn.qr_svg(client_config).encode()).decode()
    return render_template("vpn/show.html", peer=peer, client_config=client_config, qr=qr,
                           problem=problem, action=ActionForm())


@bp.get("/<name>/config")
def download_config(name: str):
    text = vpn.client_config(conn(), config(), name)
    return Response(text, mimetype="text/plain",
                    headers={"Content-Disposition": f"attachment; filename={name}.conf"})


@bp.post("/<name>/remove")
def remove(name: str):
    ActionForm()  # the guard checked the CSRF token
    vpn.remove_peer(conn(), name)
    flash(f"Peer {name} removed: it can no longer connect.", "ok")
    return redirect(url_for("vpn.index"))
