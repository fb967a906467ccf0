"""WireGuard remote administration: the server interface, peers, client configs, QR codes.

Keys come from `wg genkey`/`wg pubkey`. Private keys are files of mode 0600
under `state_dir/vpn/` (the server's and each peer's, so the client config
can be downloaded again); they are passed to `wg` as file paths, never on a
command line, and never logged. Peers live in the `vpn_peers` table.

The interface is kernel WireGuard through pyroute2 where the kernel has it,
else `wireguard-go` (userspace) run as a child of the service; either way it
is configured with `wg set` and addressed with pyroute2. `VpnService` keeps
the interface's peers in step with the table while `nixie serve` runs.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from appliance.errors import Conflict, InvalidInput, NixieError, NotFound
from appliance.state.db import now, transaction
from netservices.listen import parse_listen

log = logging.getLogger("nixie.vpn")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


class VpnError(NixieError):
    http_status = 500


# ------------------------------------------------------------------ keys


def _wg(*args: str, input: str | None = None, netns: str | None = None) -> str:
    cmd = ["wg", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        # stderr of wg never contains key material; the command line has only paths
        raise VpnError(f"wg {args[0]} failed: {r.stderr.strip()}")
    return r.stdout


def generate_private_key() -> str:
    return _wg("genkey").strip()


def public_key(private: str) -> str:
    return _wg("pubkey", input=private + "\n").strip()


def write_secret(path: Path, text: str) -> None:
    """Create or replace a 0600 file (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def vpn_dir(cfg) -> Path:
    return Path(cfg.state_dir) / "vpn"


def server_key_file(cfg) -> Path:
    """The server's private key file, made on first use."""
    path = vpn_dir(cfg) / "server.key"
    if not path.exists():
        write_secret(path, generate_private_key())
    return path


def server_public_key(cfg) -> str:
    return public_key(server_key_file(cfg).read_text().strip())


# ------------------------------------------------------------------ peers


def _peer_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "public_key": row["public_key"],
            "address": row["address"], "created_at": row["created_at"],
            "has_private_key": bool(row["key_file"])}


def list_peers(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [_peer_dict(r) for r in conn.execute(
        "SELECT * FROM vpn_peers WHERE revoked_at IS NULL ORDER BY id")]


def get_peer(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM vpn_peers WHERE name = ? AND revoked_at IS NULL",
                       (name,)).fetchone()
    if row is None:
        raise NotFound(f"no VPN peer named {name!r}")
    return row


def next_address(cfg, taken: set[str]) -> str:
    iface = ipaddress.IPv4Interface(cfg.vpn.address)
    for host in iface.network.hosts():
        if host != iface.ip and str(host) not in taken:
            return str(host)
    raise Conflict(f"no free address left in {iface.network}")


def add_peer(conn: sqlite3.Connection, cfg, name: str, public: str | None = None) -> dict[str, Any]:
    """A new peer with the next free tunnel address. Without `public`, a key pair is
    generated and the private key kept (0600) so its config can be downloaded."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput("a peer name is 1-63 letters, digits, '.', '_' or '-'", field="name")
    key_file = None
    if public is None:
        private = generate_private_key()
        public = public_key(private)
    else:
        private = None
        if not _KEY.match(public):
            raise InvalidInput("not a WireGuard public key", field="public_key")
    with transaction(conn):
        if conn.execute("SELECT 1 FROM vpn_peers WHERE name = ?", (name,)).fetchone():
            raise Conflict(f"a VPN peer named {name!r} exists")
        if conn.execute("SELECT 1 FROM vpn_peers WHERE public_key = ?", (public,)).fetchone():
            raise Conflict("that public key belongs to another peer")
        taken = {r[0] for r in conn.execute("SELECT address FROM vpn_peers")}
        address = next_address(cfg, taken)
        cur = conn.execute("INSERT INTO vpn_peers (name, public_key, address, created_at) "
                           "VALUES (?, ?, ?, ?)", (name, public, address, now()))
        peer_id = cur.lastrowid
        if private is not None:
            path = vpn_dir(cfg) / "peers" / f"{peer_id}.key"
            write_secret(path, private)
            key_file = str(path)
            conn.execute("UPDATE vpn_peers SET key_file = ? WHERE id = ?", (key_file, peer_id))
    log.info("vpn peer added", extra={"peer": name, "address": address})
    return _peer_dict(get_peer(conn, name))


def remove_peer(conn: sqlite3.Connection, name: str) -> None:
    row = get_peer(conn, name)
    with transaction(conn):
        conn.execute("DELETE FROM vpn_peers WHERE id = ?", (row["id"],))
    if row["key_file"]:
        Path(row["key_file"]).unlink(missing_ok=True)
    log.info("vpn peer removed", extra={"peer": name})


def endpoint(cfg) -> str:
    if cfg.vpn.endpoint:
        return cfg.vpn.endpoint
    if cfg.wan.address:
        return f"{ipaddress.IPv4Interface(cfg.wan.address).ip}:{cfg.vpn.listen_port}"
    raise InvalidInput("set vpn.endpoint (the address peers dial): the WAN has no static address",
                       field="vpn.endpoint")


def dns_server_for_peers(cfg) -> str:
    """The DNS address a peer can reach through the tunnel: a dns.listen address inside
    the LAN or VPN network, else the LAN address (the DNS server binds only dns.listen)."""
    nets = [cfg.lan_interface.network, ipaddress.IPv4Interface(cfg.vpn.address).network]
    for listen in cfg.dns.listen:
        host = parse_listen(listen)[1]
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            continue
        if any(ip in n for n in nets):
            return str(ip)
    return cfg.lan_ip


def client_config(conn: sqlite3.Connection, cfg, name: str) -> str:
    """The peer's wg-quick configuration (it holds the peer's private key: show it to the
    admin only, never log it)."""
    row = get_peer(conn, name)
    if not row["key_file"]:
        raise Conflict(f"peer {name!r} brought its own key; there is no config to download")
    private = Path(row["key_file"]).read_text().strip()
    net = ipaddress.IPv4Interface(cfg.vpn.address).network
    allowed = [str(net), str(cfg.lan_interface.network)]
    dns = dns_server_for_peers(cfg)
    return (
        "[Interface]\n"
        f"PrivateKey = {private}\n"
        f"Address = {row['address']}/{net.prefixlen}\n"
        f"DNS = {dns}, {cfg.lan.domain}\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {server_public_key(cfg)}\n"
        f"Endpoint = {endpoint(cfg)}\n"
        f"AllowedIPs = {', '.join(allowed)}\n"
        "PersistentKeepalive = 25\n"
    )


def qr_svg(text: str) -> str:
    """A QR code of `text` as an SVG document on white (no Pillow needed)."""
    import qrcode
    import qrcode.image.svg

    img = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathFillImage,
                      error_correction=qrcode.constants.ERROR_CORRECT_M)
    return img.to_string(encoding="unicode")


# ------------------------------------------------------------------ the interface


class WireGuardInterface:
    """One server interface: kernel WireGuard if available, else wireguard-go."""

    def __init__(self, name: str, netns: str | None = None):
        self.name = name
        self.netns = netns
        self.userspace: subprocess.Popen | None = None
        self.kind: str | None = None

    def _argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else list(cmd)

    def _ipr(self):
        from pyroute2 import IPRoute, NetNS

        return NetNS(self.netns) if self.netns else IPRoute()

    def _exists(self) -> bool:
        with self._ipr() as ipr:
            return bool(ipr.link_lookup(ifname=self.name))

    def create(self) -> str:
        from pyroute2 import NetlinkError

        if self._exists():  # left behind by a serve that died: it is ours, start clean
            log.warning("vpn interface exists; recreating it", extra={"interface": self.name})
            with self._ipr() as ipr:
                ipr.link("del", index=ipr.link_lookup(ifname=self.name)[0])
            deadline = time.monotonic() + 5
            while self._exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        try:
            with self._ipr() as ipr:
                ipr.link("add", ifname=self.name, kind="wireguard")
            self.kind = "kernel"
        except NetlinkError:
            self.userspace = subprocess.Popen(self._argv("wireguard-go", "-f", self.name),
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True,
                                              env={**os.environ, "LOG_LEVEL": "error"})
            deadline = time.monotonic() + 10
            while not self._exists():
                if self.userspace.poll() is not None or time.monotonic() > deadline:
                    raise VpnError(f"wireguard-go could not create {self.name}") from None
                time.sleep(0.05)
            # wg talks to it through its socket: wait for that too
            while time.monotonic() < deadline:
                if subprocess.run(self._argv("wg", "show", self.name), capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            self.kind = "wireguard-go"
        return self.kind

    def configure(self, key_file: Path, listen_port: int, address: str) -> None:
        _wg("set", self.name, "listen-port", str(listen_port), "private-key", str(key_file),
            netns=self.netns)
        iface = ipaddress.IPv4Interface(address)
        with self._ipr() as ipr:
            idx = ipr.link_lookup(ifname=self.name)[0]
            have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx)}
            if (str(iface.ip), iface.network.prefixlen) not in have:
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            ipr.link("set", index=idx, state="up")

    def peers(self) -> dict[str, str]:
        out = _wg("show", self.name, "allowed-ips", netns=self.netns)
        return {line.split("\t")[0]: line.split("\t")[1] for line in out.splitlines() if "\t" in line}

    def sync_peers(self, wanted: dict[str, str]) -> tuple[int, int]:
        """Make the interface's peers exactly `wanted` (public key -> address). Returns
        (added, removed)."""
        have = self.peers()
        added = removed = 0
        for key in have.keys() - wanted.keys():
            _wg("set", self.name, "peer", key, "remove", netns=self.netns)
            removed += 1
        for key, addr in wanted.items():
            if have.get(key) != f"{addr}/32":
                _wg("set", self.name, "peer", key, "allowed-ips", f"{addr}/32", netns=self.netns)
                added += 1
        return added, removed

    def destroy(self) -> None:
        if self.userspace is not None:
            self.userspace.terminate()  # wireguard-go removes its interface on exit
            try:
                self.userspace.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.userspace.kill()
                self.userspace.wait()
            self.userspace = None
        elif self.kind == "kernel":
            with self._ipr() as ipr:
                found = ipr.link_lookup(ifname=self.name)
                if found:
                    ipr.link("del", index=found[0])


class VpnService:
    """`nixie serve`'s WireGuard server: brings the interface up, keeps peers in step."""

    name = "vpn"

    def __init__(self, cfg, store, interval: float = 2.0, netns: str | None = None):
        self.cfg = cfg
        self.store = store
        self.interval = interval
        self.iface = WireGuardInterface(cfg.vpn.interface, netns)
        self._stats: dict[str, Any] = {}

    def run(self, stop: threading.Event) -> None:
        vpn = self.cfg.vpn
        kind = self.iface.create()
        try:
            self.iface.configure(server_key_file(self.cfg), vpn.listen_port, vpn.address)
            log.info("vpn up", extra={"interface": vpn.interface, "kind": kind,
                                      "port": vpn.listen_port})
            self._stats = {"kind": kind, "interface": vpn.interface}
            while True:
                wanted = {p["public_key"]: p["address"] for p in list_peers(self.store.conn())}
                added, removed = self.iface.sync_peers(wanted)
                self._stats["peers"] = len(wanted)
                if added or removed:
                    log.info("vpn peers synced", extra={"added": added, "removed": removed})
                if stop.wait(self.interval):
                    return
                if self.iface.userspace is not None and self.iface.userspace.poll() is not None:
                    raise VpnError("wireguard-go exited")
        finally:
            self.iface.destroy()

    def stats(self) -> dict[str, Any]:
        return dict(self._stats)
