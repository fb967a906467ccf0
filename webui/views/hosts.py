"""Hosts: list with search and pages, add/edit/remove, generations, Wake-on-LAN,
boot timeline, hosts.json import and export."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from appliance.domain import bmc, boots, builds, events, flakes, generations, hosts
from appliance.domain.ipv6 import lan_prefix6
from appliance.errors import NixieError
from appliance.nix import install
from appliance.router import wol
from appliance.router.bmc import flows, power
from appliance.state.db import now

from .. import fragments
from ..context import config, conn, ctx
from ..forms import ActionForm, BmcForm, GenerationForm, HostForm, ImportForm, options
from .common import PAGE_SIZE, attach_error, page_arg

bp = Blueprint("hosts", __name__, url_prefix="/hosts")
FIELDS = {"mac": "macs"}


@bp.get("/")
def index():
    q = (request.args.get("q") or "").strip()[:100]
    page = page_arg(request.args.get("page"))

    def table() -> str:
        c = conn()
        total = hosts.count_hosts(c, search=q or None)
        rows = hosts.list_hosts(c, search=q or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        return render_template("hosts/_table.html", hosts=rows, q=q, page=page, total=total,
                               pages=max(1, -(-total // PAGE_SIZE)),
                               power=bmc.power_by_host(c))

    return render_template("hosts/index.html", q=q, table=fragments.cached(request.full_path, table),
                           import_fields=fragments.constant("hosts:import-fields", _import_fields))


def _import_fields() -> str:
    """The import form's fields: the same for everyone (its CSRF token is not in them)."""
    return render_template("hosts/_import_fields.html", import_form=ImportForm(meta={"csrf": False}))


def _flake_choices():
    return flakes.list_flakes(conn())


@bp.route("/_new", methods=["GET", "POST"])
def new():
    form = HostForm()
    if not form.is_submitted():
        for k in ("name", "flake", "attr"):
            if request.args.get(k):
                getattr(form, k).data = request.args[k][:2048]
    if form.validate_on_submit():
        try:
            h = hosts.add_host(conn(), form.name.data.strip(), form.mac_list(), form.flake.data,
                               (form.attr.data or "").strip() or None, form.mode.data,
                               **_reservation(form))
        except NixieError as e:
            attach_error(form, e, FIELDS)
        else:
            flash(f"Host {h['name']} added.", "ok")
            return redirect(url_for("hosts.show", name=h["name"]))
    return render_template("hosts/form.html", form=form, host=None, flakes=_flake_choices()), \
        (400 if form.errors else 200)


@bp.get("/<name>")
def show(name: str):
    c = conn()
    h = hosts.get_host(c, name)
    gens = generations.list_generations(c, name)
    default = default_generation(gens)
    gen_form = GenerationForm()
    gen_form.number.choices = options(*((g["number"], f"#{g['number']}") for g in gens))
    gen_form.number.data = default
    form = HostForm(data={"name": h["name"], "macs": "\n".join(h["macs"]), "flake": h["flake"],
                          "attr": h["attr"], "mode": h["mode"]})
    host_bmc = bmc.get_bmc(c, name)
    bmc_form = BmcForm(data=_bmc_form_data(host_bmc))
    return render_template("hosts/show.html", host=h, gens=gens, default=default,
                           gen_form=gen_form, form=form, bmc=host_bmc, bmc_form=bmc_form,
                           timeline=events.recent(c, host_id=h["id"], limit=50),
                           boots=boots.of_host(c, h["id"], now(), limit=5),
                           troubleshooting=boots.TROUBLESHOOTING, anchor=boots.anchor,
                           builds=builds.list_builds(c, host_name=name, limit=10),
                           action=ActionForm(), flakes=_flake_choices())


def default_generation(gens: list[dict]) -> int | None:
    """The generation the host boots by default: the one chosen as current, else the
    newest (the boot menu's default, netservices.httpboot.scripts.default_target)."""
    for g in gens:
        if g["current"]:
            return g["number"]
    return gens[0]["number"] if gens else None


@bp.route("/<name>/edit", methods=["GET", "POST"])
def edit(name: str):
    h = hosts.get_host(conn(), name)
    form = HostForm(data={"name": h["name"], "macs": "\n".join(h["macs"]), "flake": h["flake"],
                          "attr": h["attr"], "mode": h["mode"], "ip": h["ip_reservation"],
                          "ip6": h["ip6_reservation"]})
    if form.validate_on_submit():
        try:
            hosts.update_host(conn(), name, macs=form.mac_list(), flake=form.flake.data,
                              attr=(form.attr.data or "").strip() or None, mode=form.mode.data,
                              **_reservation(form, clear=True))
        except NixieError as e:
            attach_error(form, e, FIELDS)
        else:
            flash(f"Host {name} saved.", "ok")
            return redirect(url_for("hosts.show", name=name))
    return render_template("hosts/form.html", form=form, host=h, flakes=_flake_choices()), \
        (400 if form.errors else 200)


def _reservation(form: HostForm, clear: bool = False) -> dict:
    """The IPv4 and IPv6 reservations the form asks for, checked against the LAN that
    runs ('' clears them on an edit)."""
    out: dict = {}
    ip = (form.ip.data or "").strip()
    if ip:
        out.update(ip=ip, network=config().lan.address)
    elif clear:
        out["ip"] = ""
    ip6 = (form.ip6.data or "").strip()
    if ip6:
        out.update(ip6=ip6, network6=lan_prefix6(conn(), config().lan.address6))
    elif clear:
        out["ip6"] = ""
    return out


@bp.post("/<name>/remove")
def remove(name: str):
    hosts.remove_host(conn(), name)
    flash(f"Host {name} removed.", "ok")
    return redirect(url_for("hosts.index"))


@bp.post("/<name>/generation")
def set_generation(name: str):
    form = GenerationForm()
    form.number.choices = options(*((g["number"], str(g["number"]))
                                    for g in generations.list_generations(conn(), name)))
    if form.validate_on_submit():
        generations.set_current_generation(conn(), name, form.number.data)
        flash(f"host {name} now boots generation {form.number.data} by default.", "ok")
    else:
        flash("Pick one of the host's generations.", "error")
    return redirect(url_for("hosts.show", name=name))


@bp.post("/<name>/wol")
def wake(name: str):
    sent = wake_host(name)
    flash(f"Wake-on-LAN sent to {', '.join(sent)}.", "ok")
    return redirect(url_for("hosts.show", name=name))


def wake_host(name: str) -> list[str]:
    """Wake-on-LAN on the LAN interface (of the effective config)."""
    return wol.wake_host(conn(), name, interface=config().lan.interface)


def _bmc_form_data(b: bmc.Bmc | None) -> dict:
    if b is None:
        return {"kind": "ipmi", "verify_tls": True}
    return {"kind": b.kind, "address": b.address, "port": b.port, "username": b.username,
            "system_id": b.system_id or "", "verify_tls": b.verify_tls}


@bp.post("/<name>/bmc")
def set_bmc(name: str):
    form = BmcForm()
    if form.validate_on_submit():
        try:
            bmc.set_bmc(conn(), name, bmc.parse_input(form.to_input()))
        except NixieError as e:
            flash(f"BMC not saved: {e}", "error")
        else:
            flash(f"BMC of {name} saved (the password is not shown again).", "ok")
    else:
        problems = "; ".join(f"{form[k].label.text}: {' '.join(v)}" for k, v in form.errors.items()
                             if k in form._fields)
        flash(f"BMC not saved: {problems or 'the form expired, try again'}", "error")
    return redirect(url_for("hosts.show", name=name))


@bp.post("/<name>/bmc/clear")
def clear_bmc(name: str):
    bmc.clear_bmc(conn(), name)
    flash(f"BMC of {name} removed.", "ok")
    return redirect(url_for("hosts.show", name=name))


@bp.post("/<name>/power/<action>")
def power_action(name: str, action: str):
    """A BMC action; a failing BMC is a message here and an event on the host."""
    try:
        r = power.power_action(conn(), name, action)
    except NixieError as e:
        flash(f"Power {action} failed, nothing changed: {e}", "error")
    else:
        flash(f"{name}: {r.message}.", "ok")
    return redirect(url_for("hosts.show", name=name))


@bp.post("/<name>/boot")
def boot_now(name: str):
    """Boot now: one-time network boot through the BMC, else Wake-on-LAN."""
    try:
        out = power.boot_from_network(conn(), name, interface=config().lan.interface)
    except NixieError as e:
        flash(f"Boot now failed: {e}", "error")
    else:
        if out.bmc_error:
            flash(f"The BMC failed ({out.bmc_error}); sent Wake-on-LAN instead.", "error")
        flash(out.message + ".", "ok")
    return redirect(url_for("hosts.show", name=name))


@bp.post("/<name>/build")
def build(name: str):
    b = builds.enqueue(conn(), name)
    flash(f"Build {b['id']} of {name} queued.", "ok")
    return redirect(url_for("builds.show", build_id=b["id"]))


@bp.post("/<name>/rebuild-and-reboot")
def rebuild_and_reboot(name: str):
    """Build now; when the build succeeds, boot the host from the network."""
    b = builds.enqueue(conn(), name, reboot_after=True)
    flash(f"Build {b['id']} of {name} queued; {name} boots from the network when it "
          "succeeds.", "ok")
    return redirect(url_for("builds.show", build_id=b["id"]))


@bp.post("/<name>/reinstall")
def reinstall(name: str):
    """Install mode, then boot from the network (BMC one-time PXE, else Wake-on-LAN)."""
    try:
        out = flows.reinstall(conn(), name, interface=config().lan.interface)
    except NixieError as e:
        flash(f"{name} is in install mode, but booting it failed: {e}", "error")
    else:
        if out.bmc_error:
            flash(f"The BMC failed ({out.bmc_error}); sent Wake-on-LAN instead.", "error")
        flash(f"Reinstalling: {out.message}.", "ok")
    return redirect(url_for("hosts.show", name=name))


@bp.post("/<name>/push-install")
def push_install(name: str):
    """nixos-anywhere from the router, trusting only the host's pinned SSH key."""
    try:
        install.start_push_install(ctx().store.conn, config().state_dir, name)
    except NixieError as e:
        flash(f"Push install of {name} not started: {e}", "error")
    else:
        flash(f"Push install of {name} started; its timeline shows how it goes.", "ok")
    return redirect(url_for("hosts.show", name=name))


@bp.get("/hosts.json")
def export():
    text = hosts.export_hosts(conn())
    return Response(text, mimetype="application/json",
                    headers={"Content-Disposition": "attachment; filename=hosts.json"})


@bp.post("/_import")
def import_():
    form = ImportForm()
    if form.validate_on_submit():
        raw = form.file.data.read(8 * 1024 * 1024 + 1)
        try:
            text = raw.decode("utf-8")
            r = hosts.import_hosts(conn(), text, default_flake=(form.flake.data or "").strip() or None,
                                   replace=form.replace.data)
        except UnicodeDecodeError:
            flash("hosts.json must be UTF-8 text.", "error")
        except NixieError as e:
            flash(f"Import refused, nothing changed: {e}", "error")
        else:
            flash(f"Imported hosts.json: {len(r['added'])} added, {len(r['updated'])} updated.", "ok")
    else:
        flash("Choose a hosts.json file to import.", "error")
    return redirect(url_for("hosts.index"))
