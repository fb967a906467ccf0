"""Boot media (issue 20): tokens listed, revoked and checked by the boot endpoint; the media
files read back offline (xorriso, mtools, bytes) carry the URL and token and nothing else
host-specific."""

from __future__ import annotations

import json
import subprocess

import pytest

from appliance.config.schema import load_config
from appliance.domain import generations, hosts, media
from appliance.domain.boot_backend import SqliteBackend
from appliance.errors import InvalidInput
from appliance.nix import bootmedia
from appliance.nix.bootartifacts import StoreBootArtifacts
from appliance.state import db
from netservices.backend import Artifact
from netservices.httpboot import BootSettings, create_boot_app
from tests.conftest import run_nixie, write_config
from tests.golden import assert_golden
from tests.unit.test_httpboot import call
from tests.unit.test_httpboot_appliance import make_app

MAC = "bc:24:11:00:20:01"
URL = "http://10.0.0.1:8081"


def _host(conn, name="far1", mac=MAC):
    return hosts.add_host(conn, name, [mac], "github:me/infra")


def test_tokens_listed_revoked_and_hashed(tmp_path):
    store = db.Store(tmp_path / "nixie.db")
    conn = store.conn()
    _host(conn)
    row, token = media.create_token(conn, host="far1", base_url=URL + "/", fmt="iso")
    assert row["host"] == "far1" and row["base_url"] == URL and row["revoked_at"] is None
    gen, gtoken = media.create_token(conn, host=None, base_url=URL, fmt="usb", label="spare")
    assert gen["host"] is None and gtoken != token
    dump = "\n".join(conn.iterdump())
    assert token not in dump and gtoken not in dump  # only hashes are kept
    assert [t["id"] for t in media.list_tokens(conn)] == [gen["id"], row["id"]]
    assert [t["id"] for t in media.list_tokens(conn, host="far1")] == [row["id"]]
    assert media.check_token(conn, token, "192.0.2.9")["host_id"] == row["host_id"]
    assert media.get_token(conn, row["id"])["uses"] == 1
    media.revoke_token(conn, row["id"])
    assert media.check_token(conn, token) is None
    assert media.check_token(conn, "x" * 5) is None and media.check_token(conn, "a b" * 10) is None
    for bad in ("ftp://x", "http://x/ a", "http://x?q=1", "http://$x", "", None):
        with pytest.raises(InvalidInput):
            media.create_token(conn, host=None, base_url=bad, fmt="iso")
    with pytest.raises(InvalidInput):
        media.create_token(conn, host=None, base_url=URL, fmt="floppy")


def test_endpoint_takes_token_refuses_revoked_and_requires_it_beyond_lan(tmp_path):
    app, store = make_app(tmp_path, local_nets=("10.0.0.0/24",))
    conn = store.conn()
    _host(conn)
    _, token = media.create_token(conn, host="far1", base_url="http://198.51.100.7:8081", fmt="iso")
    _, generic = media.create_token(conn, host=None, base_url=URL, fmt="efi")

    def get(path, ip, query=""):
        status, _, body = call(app, path, query=query, environ={"REMOTE_ADDR": ip})
        return status, body.decode()

    # beyond the LAN: the plain MAC script is refused, the media token works
    assert get(f"/boot/{MAC}.ipxe", "192.168.77.5")[0] == 403
    assert get("/dispatch/configuration/x", "192.168.77.5")[0] == 403
    assert get(f"/boot/{'a' * 32}-x/netboot.ipxe", "192.168.77.5")[0] == 403
    # kernels and initrds (named by store hash) are not behind the token: 404 here, not 403
    assert get(f"/boot/{'a' * 32}-x/kernel", "192.168.77.5")[0] == 404
    status, text = get(f"/boot/m/{token}.ipxe", "192.168.77.5")
    assert status == 200 and "far1: no system built yet" in text
    # the script retries through the media's own URL (the public one), token included
    assert f"chain --replace --autofree http://198.51.100.7:8081/boot/m/{token}.ipxe" in text
    status, text = get(f"/boot/m/{token}.grub", "192.168.77.5")
    assert status == 200 and f"configfile (http,198.51.100.7:8081)/boot/m/{token}.grub" in text
    # generic media: the MAC names the host; an unknown MAC is a machine waiting
    status, text = get(f"/boot/m/{generic}.ipxe", "192.168.77.5", f"mac={MAC.replace(':', '-')}")
    assert status == 200 and "far1" in text
    status, text = get(f"/boot/m/{generic}.ipxe", "192.168.77.5", "mac=02-00-00-00-00-99")
    assert status == 200 and "unknown machine 02:00:00:00:00:99" in text
    assert conn.execute("SELECT count(*) FROM waiting_machines WHERE mac = ?",
                        ("02:00:00:00:00:99",)).fetchone()[0] == 1
    # on the LAN the plain script still needs no token
    assert get(f"/boot/{MAC}.ipxe", "10.0.0.50")[0] == 200
    # revoked or forged: 403, also on the LAN
    media.revoke_token(conn, media.list_tokens(conn, host="far1")[0]["id"])
    assert get(f"/boot/m/{token}.ipxe", "192.168.77.5")[0] == 403
    assert get(f"/boot/m/{token}.ipxe", "10.0.0.50")[0] == 403
    assert get("/boot/m/" + "A" * 32 + ".ipxe", "10.0.0.50")[0] == 403
    assert get("/boot/m/" + "A" * 5000 + ".grub", "10.0.0.50")[0] == 403
    refused = conn.execute("SELECT count(*) FROM events WHERE kind = 'boot.media_refused'")
    assert refused.fetchone()[0] >= 3


def test_token_flood_is_refused_cheaply(tmp_path):
    """Forged tokens: every one is a 403, and the event log stays within its budget."""
    app, store = make_app(tmp_path, local_nets=("10.0.0.0/24",))
    for i in range(300):
        status, _, _ = call(app, f"/boot/m/forged{i:027d}.ipxe")
        assert status == 403
    n = store.conn().execute("SELECT count(*) FROM events WHERE kind = 'boot.media_refused'")
    assert n.fetchone()[0] <= 40


TOKEN = "Tok3n_-abcdefghijklmnopqrstuvwxyzAB"


def _extract_iso(iso, name, tmp_path):
    out = tmp_path / name.replace("/", "_")
    subprocess.run(["xorriso", "-indev", str(iso), "-osirrox", "on", "-extract", "/" + name,
                    str(out)], check=True, capture_output=True)
    return out.read_bytes()


STATIC = ("192.0.2.10/24", "192.0.2.1", "192.0.2.53")


def _medium_files(out, fmt, tmp_path):
    """What each loader reads back: {name: bytes} for the script and GRUB's binary."""
    if fmt == "iso":
        return {n: _extract_iso(out, n, tmp_path)
                for n in ("nixie.ipxe", "efiboot.img", "ipxe.lkrn", "isolinux/isolinux.cfg")}
    if fmt == "usb":
        return {n: subprocess.run(["mtype", "-i", f"{out}@@1M", f"::/{n}"], check=True,
                                  capture_output=True).stdout
                for n in ("nixie.ipxe", "EFI/BOOT/BOOTX64.EFI")}
    return {"BOOTX64.EFI": out.read_bytes()}


@pytest.mark.parametrize("static", [False, True], ids=["dhcp", "static"])
@pytest.mark.parametrize("generic", [False, True], ids=["host", "generic"])
@pytest.mark.parametrize("fmt", ["iso", "usb", "efi"])
def test_media_file_carries_url_and_token_exactly_once(tmp_path, fmt, generic, static):
    """The whole file, read back as bytes: the router's URL and the token once each (one
    script read by iPXE and by GRUB), no MAC, host name, store path or other secret."""
    st = bootmedia.Static.parse(*STATIC) if static else None
    token = TOKEN if not generic else TOKEN[::-1]
    out = bootmedia.build(fmt, URL, token, tmp_path / f"m.{fmt}", static=st)
    data = out.read_bytes()
    assert data.count(token.encode()) == 1
    assert data.count(b"10.0.0.1:8081") == 1
    assert data.count(b"10.0.0.1") == 1
    assert b"far1" not in data and MAC.encode() not in data and b"/nix/store" not in data
    assert data.count(b"192.0.2.10") == (1 if static else 0)
    script = bootmedia.media_script(URL, token, st)
    assert data.count(script.encode()) == 1  # the script, whole, is where they are
    files = _medium_files(out, fmt, tmp_path)
    if fmt in ("iso", "usb"):
        assert files["nixie.ipxe"].decode() == script
        efi = files["efiboot.img" if fmt == "iso" else "EFI/BOOT/BOOTX64.EFI"]
        assert token.encode() not in efi and b"10.0.0.1" not in efi  # GRUB holds neither
        assert bootmedia.GRUB_CFG.encode() in efi
    else:
        assert files["BOOTX64.EFI"][:2] == b"MZ" and bootmedia.GRUB_CFG.encode() in data
    if fmt == "iso":
        assert "KERNEL /ipxe.lkrn" in files["isolinux/isolinux.cfg"].decode()
        assert "INITRD /nixie.ipxe" in files["isolinux/isolinux.cfg"].decode()
        assert files["ipxe.lkrn"] == open("/usr/lib/ipxe/ipxe.lkrn", "rb").read()
        assert data[510:512] == b"\x55\xaa"  # isohybrid: bootable as a USB disk too
    elif fmt == "usb":
        assert data[446 + 4] == 0xEF and data[510:512] == b"\x55\xaa"


def test_shared_script_and_grub_config_golden():
    """The script both loaders read (DHCP and static), and GRUB's config: no URL, no token."""
    assert_golden("media-dhcp.ipxe", bootmedia.media_script(URL, TOKEN))
    assert_golden("media-static.ipxe", bootmedia.media_script(
        URL, TOKEN, bootmedia.Static.parse(*STATIC)))
    assert_golden("media-grub.cfg", bootmedia.GRUB_CFG)
    assert "10.0.0.1" not in bootmedia.GRUB_CFG and "http://" not in bootmedia.GRUB_CFG.replace(
        "^http://", "").replace("an http:// URL", "")


def test_shared_script_is_what_grub_can_parse():
    """GRUB 2.06 cannot parse `||`, labels or `${net0/...}` (a syntax error drops the line)
    and its builtin `set` wins over a function: the script keeps to plain commands."""
    for st in (None, bootmedia.Static.parse(*STATIC)):
        text = bootmedia.media_script(URL, TOKEN, st)
        body = [ln for ln in text.splitlines() if not ln.startswith("#")]
        assert text.startswith("#!ipxe\n")
        assert not [ln for ln in body if "||" in ln or "&&" in ln or ln.startswith(":")]
        assert not [ln for ln in body if ln.split()[0] in ("set", "goto")]
        assert "${net0/" not in text and f"chain {URL}/boot/m/{TOKEN}.ipxe?mac=${{mac}}" in text
        for ln in body:
            assert ln.split()[0] in ("echo", "dhcp", "ifopen", "${grub}set", "chain"), ln
            fn = ln.split()[0].replace("${grub}", "grub_")
            assert fn == "echo" or f"function {fn} {{" in bootmedia.GRUB_CFG
    with pytest.raises(InvalidInput):
        bootmedia.media_script("https://x", TOKEN)


def test_static_address_media():
    st = bootmedia.Static.parse(*STATIC)
    text = bootmedia.media_script(URL, TOKEN, st)
    assert "dhcp" not in text and "${grub}set net0/ip 192.0.2.10" in text
    assert "${grub}set net0/netmask 255.255.255.0" in text
    assert "${grub}set net0/gateway 192.0.2.1" in text and "${grub}set dns 192.0.2.53" in text
    assert "255.255.255.0/24" in bootmedia.GRUB_CFG  # GRUB's netmask -> prefix table
    for bad in (("192.0.2.10",), ("192.0.2.10/24", "nope"), ("x/24",)):
        with pytest.raises(InvalidInput):
            bootmedia.Static.parse(*bad)


def test_cli_writes_lists_and_revokes(config_file, tmp_path):
    r = run_nixie("host", "add", "far1", "--mac", MAC, "--flake", "github:me/infra",
                  config=config_file)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "far1.img"
    r = run_nixie("media", "far1", "--format", "usb", "-o", str(out), "--json", config=config_file)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["host"] == "far1" and row["base_url"] == "http://127.0.0.1:8081"
    script = subprocess.run(["mtype", "-i", f"{out}@@1M", "::/nixie.ipxe"],
                            check=True, capture_output=True).stdout
    assert b"chain http://127.0.0.1:8081/boot/m/" in script
    r = run_nixie("media", "--generic", "--format", "iso", "-o", str(tmp_path / "g.iso"),
                  "--address", "192.0.2.10/24", "--gateway", "192.0.2.1", config=config_file)
    assert r.returncode == 0, r.stderr
    script = _extract_iso(tmp_path / "g.iso", "nixie.ipxe", tmp_path).decode()
    assert "${grub}set net0/ip 192.0.2.10" in script
    # errors name what is wrong, and write nothing
    r = run_nixie("media", "far1", "--format", "iso", "-o", str(tmp_path / "x.iso"), "--url", "vpn",
                  config=config_file)
    assert r.returncode != 0 and "vpn" in r.stderr and not (tmp_path / "x.iso").exists()
    r = run_nixie("media", "nobody", "-o", str(tmp_path / "y.iso"), config=config_file)
    assert r.returncode != 0 and "nobody" in r.stderr
    r = run_nixie("media", "--list", "--json", config=config_file)
    rows = json.loads(r.stdout)
    assert [(t["host"], t["format"]) for t in rows] == [(None, "iso"), ("far1", "usb")]
    r = run_nixie("media", "--revoke", str(row["id"]), config=config_file)
    assert r.returncode == 0, r.stderr
    r = run_nixie("media", "--list", "far1", "--json", config=config_file)
    assert json.loads(r.stdout)[0]["revoked_at"] is not None


class _ReadyArtifacts(StoreBootArtifacts):
    """The real generations and rollback choice (boot_targets); every initrd ready
    (building one is the netns tier's business)."""

    def artifact(self, toplevel, name):
        return Artifact(name, (), 0, "e")


@pytest.mark.parametrize("with_mac", [True, False], ids=["with-mac", "no-mac"])
def test_per_host_media_boots_the_rolled_back_generation(tmp_path, state_dir, with_mac):
    """A rollback changes what a host's media boots, whether or not the host has a MAC
    (its media token names it): the iPXE menu's default entry and GRUB's one system."""
    cfg = load_config(write_config(tmp_path / "config.json", state_dir))
    store = db.Store(tmp_path / "nixie.db")
    backend = SqliteBackend(store)
    ba = _ReadyArtifacts(cfg, store)
    app = create_boot_app(hosts=backend, events=backend, artifacts=ba, agent=backend,
                          settings=BootSettings(URL), tftp_root=str(tmp_path))
    conn = store.conn()
    h = hosts.add_host(conn, "far1", [MAC], "github:me/infra")
    if not with_mac:  # a machine only its media knows (the schema allows a host no MAC)
        conn.execute("DELETE FROM host_macs WHERE host_id = ?", (h["id"],))
    top = {n: f"/nix/store/{n:032d}-nixos-system-far1-{n}" for n in (1, 2)}
    for n in (1, 2):
        conn.execute("INSERT INTO generations (host_id, number, toplevel, created_at) "
                     "VALUES (?,?,?,0)", (h["id"], n, top[n]))
    conn.execute("UPDATE hosts SET current_generation = 2 WHERE id = ?", (h["id"],))
    _, token = media.create_token(conn, host="far1", base_url=URL, fmt="iso")

    def scripts_():
        got = [call(app, f"/boot/m/{token}.{kind}", environ={"REMOTE_ADDR": "192.0.2.9"})
               for kind in ("ipxe", "grub")]
        assert [g[0] for g in got] == [200, 200]
        return [g[2].decode() for g in got]

    try:
        ipxe, grub = scripts_()
        assert "--default gen0" in ipxe and f"{top[2]}/init" in grub
        generations.rollback(conn, "far1")
        ipxe, grub = scripts_()
        assert "--default gen1" in ipxe, ipxe
        assert f"{top[1]}/init" in grub and f"{top[2]}/init" not in grub, grub
    finally:
        ba.close()


def test_cli_names_a_missing_packaged_boot_binary(config_file, tmp_path):
    """`nixie media` with tftp.ipxe_dir lacking ipxe.lkrn: exit 1, the file named, no
    traceback, no file and no token left."""
    empty = tmp_path / "no-ipxe"
    empty.mkdir()
    data = json.loads(config_file.read_text())
    data["tftp"]["ipxe_dir"] = str(empty)
    config_file.write_text(json.dumps(data))
    r = run_nixie("host", "add", "far1", "--mac", MAC, "--flake", "github:me/infra",
                  config=config_file)
    assert r.returncode == 0, r.stderr
    r = run_nixie("media", "far1", "-o", str(tmp_path / "far1.iso"), config=config_file)
    assert r.returncode == 1, r.stderr
    assert f"{empty}/ipxe.lkrn" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "far1.iso").exists()
    r = run_nixie("media", "--list", "--json", config=config_file)
    assert json.loads(r.stdout) == []
