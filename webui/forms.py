"""flask-wtf forms, one per thing an admin submits. Views turn them into calls
to appliance services; an appliance InvalidInput lands on the field it names."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional

from appliance.domain.hosts import MODES
from appliance.errors import InvalidInput


def options(*items: str | tuple[object, str]) -> list[SelectChoice]:
    """A select's options: a value (its own label) or a (value, label) pair."""
    return [SelectChoice(*item) if isinstance(item, tuple) else SelectChoice(item) for item in items]


class ActionForm(FlaskForm):
    """A button that changes something: only the CSRF token."""


class ShowsSettings:
    """A form whose fields show settings keys: KEYS maps a field to its key, the
    pair dhcp_first, dhcp_last shows `dhcp.range`, LISTS are one-item-a-line fields.
    Keys the deployment locks are shown read-only (`lock`)."""

    KEYS: dict[str, str] = {}
    LISTS: tuple[str, ...] = ()
    # [first, last] keys shown in two fields; a null range (dhcp6.range) is two empty ones
    RANGES = {"dhcp.range": ("dhcp_first", "dhcp_last"),
              "dhcp6.range": ("dhcp6_first", "dhcp6_last")}

    def fields_of(self, key: str) -> list:
        """The form fields that show settings key `key`."""
        if key in self.RANGES:
            return [getattr(self, f) for f in self.RANGES[key] if hasattr(self, f)]
        return [getattr(self, f) for f, k in self.KEYS.items() if k == key]

    def show(self, values: dict, keys) -> None:
        """Put the settings `keys` of `values` into their fields."""
        for key in keys:
            self.set_value(key, values.get(key))

    def set_value(self, key: str, v) -> None:
        if key in self.RANGES:
            for f, x in zip(self.fields_of(key), v or ("", ""), strict=False):
                f.data = x
            return
        for f in self.fields_of(key):
            f.data = "\n".join(v or []) if f.name in self.LISTS else ("" if v is None else v)

    def lock(self, locked: dict[str, str], values: dict) -> None:
        """Show the keys the deployment pins read-only, with their effective value
        (a disabled input is not submitted: its value is set here, not taken from
        the request), and say where each is set."""
        self.show(values, locked)
        for key, where in locked.items():
            for f in self.fields_of(key):
                f.render_kw = {**(f.render_kw or {}), "disabled": True}
                f.locked_by = where

    def field_for(self, key: str):
        """The field an error about settings key `key` is shown on."""
        fields = self.fields_of(key)
        return fields[0] if fields else None


class SetupForm(ShowsSettings, FlaskForm):
    setup_code = StringField("Setup code", validators=[DataRequired(), Length(max=64)],
                             description="Printed in the log of nixie serve when it first "
                                         "started, and in the file setup_code in its state "
                                         "directory",
                             render_kw={"autocomplete": "off", "spellcheck": "false",
                                        "autocapitalize": "characters"})
    username = StringField("Admin user name", default="admin",
                           validators=[DataRequired(), Length(max=32)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=1024)])
    password2 = PasswordField("Password again", validators=[
        DataRequired(), EqualTo("password", message="the two passwords differ")])
    lan_interface = StringField("LAN interface", validators=[DataRequired(), Length(max=15)])
    wan_interface = StringField("WAN interface (optional)", validators=[Optional(), Length(max=15)])
    dhcp_mode = SelectField("DHCP", choices=options(
        ("authoritative", "Authoritative: hand out addresses"),
        ("proxy", "Proxy: boot information next to another DHCP server"),
        ("off", "Off")))
    dhcp_first = StringField("First address", validators=[Optional()])
    dhcp_last = StringField("Last address", validators=[Optional()])
    builder_kind = SelectField("Builder", choices=options(
        ("local", "This router builds"), ("remote", "A remote Nix builder over SSH")))
    builder_uri = StringField("Remote builder URI", validators=[Optional(), Length(max=512)],
                              description="e.g. ssh-ng://nix@builder.lan")

    KEYS = {"lan_interface": "lan.interface", "wan_interface": "wan.interface",
            "dhcp_mode": "dhcp.mode", "builder_kind": "builder.kind", "builder_uri": "builder.uri"}


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class FlakeForm(FlaskForm):
    url = StringField("Flake URL", validators=[DataRequired(), Length(max=2048)],
                      description="e.g. github:me/fleet, git+https://…, /srv/fleet")
    build_policy = SelectField("Builds", choices=options(
        ("on_change", "follow the flake"), ("manual", "manual")), validate_choice=False,
        description="follow the flake: bind the hosts it declares and build every changed "
                    "system by itself")


class FlakePolicyForm(FlaskForm):
    build_policy = SelectField("Builds", choices=options(
        ("on_change", "follow the flake"), ("manual", "manual")))


class FlakeCredentialForm(FlaskForm):
    kind = SelectField("Credential", choices=options(
        ("token", "access token"), ("ssh_key", "SSH deploy key"), ("none", "none (public)")))
    secret = TextAreaField("Secret", validators=[Optional(), Length(max=16384)],
                           description="Stored 0600 on the router and never shown again",
                           render_kw={"rows": 3, "autocomplete": "off", "spellcheck": "false"})


class AdoptForm(FlaskForm):
    configuration = SelectField("Configuration", validators=[DataRequired()], choices=[],
                                validate_choice=False)
    name = StringField("Host name", validators=[DataRequired(), Length(max=63)])


class HostForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=63)])
    macs = TextAreaField("MAC addresses", validators=[DataRequired()],
                         description="One or more, separated by spaces, commas or new lines")
    flake = StringField("Flake", validators=[DataRequired(), Length(max=2048)],
                        render_kw={"list": "flake-list", "autocomplete": "off"})
    attr = StringField("Attribute", validators=[Optional(), Length(max=256)],
                       description="Default: nixosConfigurations.NAME",
                       render_kw={"list": "attr-list", "autocomplete": "off"})
    mode = SelectField("Boot mode", choices=options(*MODES), default="netboot")
    ip = StringField("IP reservation", validators=[Optional(), Length(max=64)],
                     description="A fixed LAN address DHCP always gives this host; empty: one "
                                 "from the pool")
    ip6 = StringField("IPv6 reservation", validators=[Optional(), Length(max=64)],
                      description="A fixed address in the LAN's IPv6 prefix DHCPv6 always gives "
                                  "this host; empty: one from the IPv6 range")

    def mac_list(self) -> list[str]:
        return [m for m in self.macs.data.replace(",", " ").split() if m]


class BmcForm(FlaskForm):
    """A host's BMC. The password field is never filled in: empty keeps the stored one."""

    kind = SelectField("Kind", choices=options(("ipmi", "IPMI over LAN"), ("redfish", "Redfish")),
                       default="ipmi")
    address = StringField("Address", validators=[DataRequired(), Length(max=253)],
                          description="The BMC's IP address or DNS name")
    port = IntegerField("Port", validators=[Optional(), NumberRange(1, 65535)],
                        description="Empty: 623 (IPMI) or 443 (Redfish)")
    username = StringField("User", validators=[DataRequired(), Length(max=64)],
                           render_kw={"autocomplete": "off"})
    password = PasswordField("Password", validators=[Optional(), Length(max=128)],
                             description="Stored on the router, never shown again; empty keeps "
                                         "the stored one",
                             render_kw={"autocomplete": "new-password"})
    system_id = StringField("Redfish system id", validators=[Optional(), Length(max=128)],
                            description="Empty: the only system the BMC lists")
    verify_tls = BooleanField("Verify the Redfish TLS certificate", default=True)

    def to_input(self) -> dict:
        d = {"kind": self.kind.data, "address": self.address.data,
             "port": self.port.data, "username": self.username.data,
             "system_id": (self.system_id.data or "").strip() or None,
             "verify_tls": bool(self.verify_tls.data)}
        if self.password.data:
            d["password"] = self.password.data
        return d


class GenerationForm(FlaskForm):
    number = SelectField("Generation", coerce=int, choices=[])


class BuildForm(FlaskForm):
    host = StringField("Host", validators=[DataRequired(), Length(max=63)],
                       render_kw={"list": "host-list", "autocomplete": "off"})


class ImportForm(FlaskForm):
    file = FileField("hosts.json", validators=[FileRequired()])
    flake = StringField("Flake for entries without one", validators=[Optional(), Length(max=2048)])
    replace = BooleanField("Update hosts that already exist")


class RestoreForm(FlaskForm):
    file = FileField("Backup archive (.tar.gz)", validators=[FileRequired()])


class TokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=64)],
                       description="Where it will be used, e.g. 'ci' or 'terraform'")


class SettingsForm(ShowsSettings, FlaskForm):
    lan_interface = StringField("LAN interface", validators=[DataRequired(), Length(max=15)])
    wan_interface = StringField("WAN interface", validators=[Optional(), Length(max=15)])
    dhcp_mode = SelectField("DHCP mode", choices=options("authoritative", "proxy", "off"))
    dhcp_first = StringField("Range: first", validators=[DataRequired()])
    dhcp_last = StringField("Range: last", validators=[DataRequired()])
    dhcp_lease_seconds = IntegerField("Lease time (s)", validators=[
        DataRequired(), NumberRange(60, 365 * 86400)])
    dhcp_unknown_clients = SelectField("Unknown PXE clients", choices=options(
        ("menu", "boot menu"), ("local", "boot local disk"), ("ignore", "ignore")))
    boot_menu = BooleanField("Show a boot menu of generations")
    boot_menu_timeout_seconds = IntegerField("Menu timeout (s)", validators=[NumberRange(0, 3600)])
    boot_cmdline = StringField("Extra kernel parameters", validators=[Optional(), Length(max=1024)])
    builder_kind = SelectField("Builder", choices=options("local", "remote"))
    builder_uri = StringField("Remote builder URI", validators=[Optional(), Length(max=512)])
    builder_max_jobs = IntegerField("Parallel builds", validators=[DataRequired(), NumberRange(1, 256)])
    builder_substituters = TextAreaField("Substituters", description="One URL per line")
    builder_trusted_public_keys = TextAreaField("Trusted public keys", description="One per line")
    lan_address6 = StringField("LAN IPv6 address", validators=[Optional(), Length(max=64)],
                               description="The router's address in a /64, e.g. fd00:1::1/64; "
                                           "empty: a generated ULA /64")
    ra_enable = BooleanField("Send router advertisements")
    dhcp6_mode = SelectField("DHCPv6 mode", choices=options(
        ("stateful", "stateful: hand out addresses"),
        ("stateless", "stateless: DNS and boot options only"), ("off", "off")))
    dhcp6_first = StringField("IPv6 range: first", validators=[Optional(), Length(max=64)],
                              description="Empty (both): <prefix>::1:0 to <prefix>::1:ffff")
    dhcp6_last = StringField("IPv6 range: last", validators=[Optional(), Length(max=64)])
    dhcp6_preferred_seconds = IntegerField("Preferred lifetime (s)", validators=[
        DataRequired(), NumberRange(60, 365 * 86400)])
    dhcp6_valid_seconds = IntegerField("Valid lifetime (s)", validators=[
        DataRequired(), NumberRange(60, 365 * 86400)])
    # left empty (or not sent): the value stays as it is
    retention_event_days = IntegerField("Keep events (days)", validators=[
        Optional(), NumberRange(1, 3_650)])
    retention_event_rows = IntegerField("Keep at most (events)", validators=[
        Optional(), NumberRange(1_000, 100_000_000)])
    gc_interval_seconds = IntegerField("Nix store GC every (s, 0 never)", validators=[
        Optional(), NumberRange(0, 30 * 86400)])
    gc_disk_warn_percent = IntegerField("Warn from disk use (%)", validators=[
        Optional(), NumberRange(1, 100)])

    # form field <-> settings key
    KEYS = {
        "lan_interface": "lan.interface", "wan_interface": "wan.interface",
        "dhcp_mode": "dhcp.mode", "dhcp_lease_seconds": "dhcp.lease_seconds",
        "dhcp_unknown_clients": "dhcp.unknown_clients", "boot_menu": "boot.menu",
        "boot_menu_timeout_seconds": "boot.menu_timeout_seconds", "boot_cmdline": "boot.cmdline",
        "builder_kind": "builder.kind", "builder_uri": "builder.uri",
        "builder_max_jobs": "builder.max_jobs", "builder_substituters": "builder.substituters",
        "builder_trusted_public_keys": "builder.trusted_public_keys",
        "lan_address6": "lan.address6", "ra_enable": "ra.enable", "dhcp6_mode": "dhcp6.mode",
        "dhcp6_preferred_seconds": "dhcp6.preferred_seconds",
        "dhcp6_valid_seconds": "dhcp6.valid_seconds",
        "retention_event_days": "retention.event_days", "retention_event_rows": "retention.event_rows",
        "gc_interval_seconds": "gc.interval_seconds", "gc_disk_warn_percent": "gc.disk_warn_percent",
    }
    LISTS = ("builder_substituters", "builder_trusted_public_keys")
    NULLABLE = ("wan_interface", "boot_cmdline", "builder_uri", "lan_address6")
    KEEP_IF_EMPTY = ("retention_event_days", "retention_event_rows", "gc_interval_seconds",
                     "gc_disk_warn_percent")

    def fill(self, values: dict) -> None:
        self.show(values, (*self.KEYS.values(), *self.RANGES))

    def values(self) -> dict:
        out = {}
        for fname, key in self.KEYS.items():
            v = getattr(self, fname).data
            if fname in self.KEEP_IF_EMPTY and v is None:
                continue
            if fname in self.LISTS:
                v = [x.strip() for x in (v or "").splitlines() if x.strip()]
            elif fname in self.NULLABLE:
                v = (v or "").strip() or None
            elif isinstance(v, str):
                v = v.strip()
            out[key] = v
        out["dhcp.range"] = [(self.dhcp_first.data or "").strip(), (self.dhcp_last.data or "").strip()]
        range6 = [(self.dhcp6_first.data or "").strip(), (self.dhcp6_last.data or "").strip()]
        out["dhcp6.range"] = range6 if any(range6) else None
        return out


class NetworkForm(FlaskForm):
    """The router's interfaces, as `appliance.router.network.NetworkSettings`."""

    lan_interface = StringField("LAN interface", validators=[DataRequired(), Length(max=15)])
    lan_address = StringField("LAN address", validators=[DataRequired(), Length(max=64)],
                              description="The router's address with prefix, e.g. 10.0.0.1/24")
    lan_ports = StringField("LAN bridge ports", validators=[Optional(), Length(max=512)],
                            description="Interfaces to bridge into the LAN (separated by spaces); "
                                        "empty: the LAN interface is a plain port")
    wan_mode = SelectField("WAN", choices=options(("none", "No WAN"), ("dhcp", "DHCP client"),
                                                  ("static", "Static address")))
    wan_interface = StringField("WAN interface", validators=[Optional(), Length(max=15)])
    wan_address = StringField("WAN address", validators=[Optional(), Length(max=64)],
                              description="Static only: address with prefix")
    wan_gateway = StringField("WAN gateway", validators=[Optional(), Length(max=64)],
                              description="Static only: the default route")
    routes = TextAreaField("Static routes", validators=[Optional(), Length(max=8192)],
                           description="One a line: DESTINATION via GATEWAY [dev INTERFACE], "
                                       "e.g. 10.20.0.0/16 via 10.0.0.254")
    confirm_seconds = IntegerField("Confirm within (s)", validators=[DataRequired(),
                                                                     NumberRange(5, 3600)],
                                   description="Not confirmed in time, the change rolls back")

    def fill(self, s: dict) -> None:
        for k in ("lan_interface", "lan_address", "wan_mode", "wan_interface", "wan_address",
                  "wan_gateway"):
            getattr(self, k).data = s.get(k) or ("none" if k == "wan_mode" else "")
        self.lan_ports.data = " ".join(s.get("lan_ports") or ())
        self.routes.data = "\n".join(
            " ".join(x for x in (r["dst"], f"via {r['via']}" if r.get("via") else "",
                                 f"dev {r['dev']}" if r.get("dev") else "") if x)
            for r in s.get("routes") or ())

    def settings(self) -> dict:
        """The settings as `NetworkSettings.from_dict` takes them (InvalidInput on a route
        line that does not parse)."""
        text = _stripped
        return {"lan_interface": text(self.lan_interface), "lan_address": text(self.lan_address),
                "lan_ports": (self.lan_ports.data or "").replace(",", " ").split(),
                "wan_mode": self.wan_mode.data, "wan_interface": text(self.wan_interface),
                "wan_address": text(self.wan_address), "wan_gateway": text(self.wan_gateway),
                "routes": parse_routes(self.routes.data or "")}


def _stripped(f) -> str | None:
    return (f.data or "").strip() or None


def parse_routes(text: str) -> list[dict]:
    """Route lines `DST [via GW] [dev DEV]` -> [{dst, via, dev}]."""
    routes = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        r = {"dst": words[0], "via": None, "dev": None}
        rest = words[1:]
        while rest:
            if len(rest) < 2 or rest[0] not in ("via", "dev") or r[rest[0]] is not None:
                raise InvalidInput(f"line {n}: write DESTINATION via GATEWAY [dev INTERFACE]",
                                   field="routes")
            r[rest[0]] = rest[1]
            rest = rest[2:]
        routes.append(r)
    return routes


class VpnPeerForm(FlaskForm):
    name = StringField("Peer name", validators=[DataRequired(), Length(max=63)],
                       description="e.g. laptop-anna")
    public_key = StringField("Its public key (optional)", validators=[Optional(), Length(max=64)],
                             description="Empty: the router makes a key pair and a config to "
                                         "download or scan")


class PasswordForm(FlaskForm):
    current_password = PasswordField("Current password",
                                     validators=[DataRequired(), Length(max=1024)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    new_password2 = PasswordField("New password again", validators=[
        DataRequired(), EqualTo("new_password", message="the two passwords differ")])


class UserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=32)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    password2 = PasswordField("Password again", validators=[
        DataRequired(), EqualTo("password", message="the two passwords differ")])


class MediaForm(FlaskForm):
    """Boot media for a host, or generic media (host empty)."""

    host = SelectField("Host", choices=[], validate_choice=False,
                       description="generic media: the machine's MAC decides which host it is")
    format = SelectField("Format", choices=options(
        ("iso", "ISO (CD or USB, BIOS and UEFI)"), ("usb", "USB disk image (UEFI)"),
        ("efi", "EFI binary (UEFI shell or boot entry)")))
    url = SelectField("Boot URL", choices=[], validate_choice=False)
    address = StringField("Static address", validators=[Optional(), Length(max=43)],
                          description="CIDR like 192.0.2.10/24; empty: DHCP")
    gateway = StringField("Gateway", validators=[Optional(), Length(max=15)])
    dns = StringField("DNS server", validators=[Optional(), Length(max=15)])
    label = StringField("Label", validators=[Optional(), Length(max=64)])
