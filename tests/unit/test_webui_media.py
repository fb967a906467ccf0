"""Boot media in the web UI and the REST API: the page writes the media (the download is
the real file, read back with xorriso/mtools), refuses a post without CSRF, shows a bad
field on the field; tokens are listed and revoked; the host page and the machines page show
the iPXE shell one-liner."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from appliance.domain import hosts, media
from appliance.errors import InvalidInput
from appliance.nix import bootmedia
from tests.conftest import run_nixie
from tests.unit.test_httpboot import call
from tests.unit.test_httpboot_appliance import make_app as boot_app
from tests.unit.test_webui_parity import api_client, field_error
from tests.webapp import csrf_of, logged_in_client, make_app

MAC = "bc:24:11:00:20:09"


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state")
    hosts.add_host(store.conn(), "far1", [MAC], "github:me/infra")
    yield app, store, cfg
    store.close()


def test_media_page_writes_the_iso_and_revokes(web, tmp_path):
    app, store, cfg = web
    c = logged_in_client(app)
    page = c.get("/media/?host=far1")
    html = page.data.decode()
    assert page.status_code == 200 and '<option selected value="far1">' in html.replace(
        'value="far1" selected', 'selected value="far1"')
    assert f"dhcp &amp;&amp; chain {cfg.boot_base_url}/boot/${{mac}}.ipxe" in html
    r = c.post("/media/", data={"host": "far1", "format": "iso", "url": "lan"})
    assert r.status_code == 400 and "CSRF" in r.data.decode()
    assert media.list_tokens(store.conn()) == []
    r = c.post("/media/", data={"csrf_token": csrf_of(html), "host": "far1", "format": "iso",
                                "url": "lan", "address": "192.0.2.300/24"})
    assert r.status_code == 400 and "192.0.2.300" in field_error(r.data.decode(), "address")
    assert 'value="192.0.2.300/24"' in r.data.decode()  # the input is kept
    assert media.list_tokens(store.conn()) == []  # nothing half-made
    r = c.post("/media/", data={"csrf_token": csrf_of(html), "host": "far1", "format": "iso",
                                "url": "lan"})
    assert r.status_code == 200 and r.headers["Content-Disposition"].endswith('.iso"')
    iso = tmp_path / "dl.iso"
    iso.write_bytes(r.data)
    out = subprocess.run(["xorriso", "-indev", str(iso), "-osirrox", "on", "-extract",
                          "/nixie.ipxe", str(tmp_path / "s.ipxe")], capture_output=True)
    assert out.returncode == 0, out.stderr
    script = (tmp_path / "s.ipxe").read_text()
    assert f"chain {cfg.boot_base_url}/boot/m/" in script
    # the token the ISO carries, at the real HTTP boot endpoint over the same state
    token = re.search(r"/boot/m/([\w-]+)\.ipxe", script).group(1)
    boot, boot_store = boot_app(Path(cfg.state_dir))
    assert call(boot, f"/boot/m/{token}.ipxe")[0] == 200
    (t,) = media.list_tokens(store.conn())
    assert t["host"] == "far1" and t["format"] == "iso"
    listing = c.get("/media/").data.decode()
    assert "far1" in listing and "active" in listing
    r = c.post(f"/media/{t['id']}/revoke", data={"csrf_token": csrf_of(listing)})
    assert r.status_code == 302
    assert media.get_token(store.conn(), t["id"])["revoked_at"] is not None
    assert call(boot, f"/boot/m/{token}.ipxe")[0] == 403  # the ISO boots no more
    boot_store.close()


def test_revoke_redirects_only_to_a_local_page(web):
    """A forged `next` (another site, scheme-relative, backslash) lands on the media page."""
    app, store, _ = web
    c = logged_in_client(app)
    token = csrf_of(c.get("/media/").data.decode())
    for forged in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "media"):
        tid = media.create_token(store.conn(), host="far1", base_url="http://192.0.2.1", fmt="iso")[0]["id"]
        r = c.post(f"/media/{tid}/revoke", data={"csrf_token": token, "next": forged})
        assert r.status_code == 302 and r.headers["Location"] == "/media/", forged
        assert media.get_token(store.conn(), tid)["revoked_at"] is not None
    tid = media.create_token(store.conn(), host="far1", base_url="http://192.0.2.1", fmt="iso")[0]["id"]
    r = c.post(f"/media/{tid}/revoke", data={"csrf_token": token, "next": "/hosts/far1"})
    assert r.headers["Location"] == "/hosts/far1"


def test_host_and_machines_pages_show_the_one_liner(web):
    app, _, cfg = web
    c = logged_in_client(app)
    want = f"dhcp &amp;&amp; chain {cfg.boot_base_url}/boot/${{mac}}.ipxe"
    html = c.get("/hosts/far1").data.decode()
    assert want in html and "/media/?host=far1" in html
    assert want in c.get("/machines/").data.decode()


def test_api_media(web, tmp_path):
    c, auth = api_client(web)
    r = c.post("/api/v1/media", json={"host": "far1", "format": "floppy"}, headers=auth)
    assert r.status_code == 400 and r.json["field"] == "format"
    r = c.post("/api/v1/media", json={"host": "nobody", "format": "efi"}, headers=auth)
    assert r.status_code == 404
    r = c.post("/api/v1/media", json={"host": None, "format": "usb"}, headers=auth)
    assert r.status_code == 201 and r.data[510:512] == b"\x55\xaa"
    img = tmp_path / "u.img"
    img.write_bytes(r.data)
    script = subprocess.run(["mtype", "-i", f"{img}@@1M", "::/nixie.ipxe"],
                            capture_output=True, check=True).stdout
    assert b"/boot/m/" in script
    token = re.search(rb"/boot/m/([\w-]+)\.ipxe", script).group(1).decode()
    boot, boot_store = boot_app(Path(web[2].state_dir))
    query = f"mac={MAC.replace(':', '-')}"
    assert call(boot, f"/boot/m/{token}.grub", query=query)[0] == 200
    tid = int(r.headers["X-Nixie-Media-Token-Id"])
    rows = c.get("/api/v1/media", headers=auth).json["items"]
    assert [(x["id"], x["host"], x["format"]) for x in rows] == [(tid, None, "usb")]
    assert c.delete(f"/api/v1/media/{tid}", headers=auth).json["revoked_at"] is not None
    assert call(boot, f"/boot/m/{token}.grub", query=query)[0] == 403  # the image boots no more
    boot_store.close()
    assert c.delete("/api/v1/media/999", headers=auth).status_code == 404
    anon = web[0].test_client()
    assert anon.post("/api/v1/media", json={"format": "iso"}).status_code in (400, 401)
    assert anon.get("/api/v1/media").status_code == 401
    assert anon.get("/media/").status_code == 302  # to the login page
    # a session without the CSRF header writes nothing
    assert c.post("/api/v1/media", json={"format": "iso"}).status_code == 400
    assert len(c.get("/api/v1/media", headers=auth).json["items"]) == 1


def test_api_media_flood_and_huge_or_forged_bodies_leave_nothing_behind(web, tmp_path,
                                                                        monkeypatch):
    """Abuse: each POST builds a file. A flood gets one token and one answer per call, and
    no build directory or file stays on the router's disk; a body over the app's limit
    (413), a forged one (not JSON, wrong types, a label too long) make no token and no file."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where every build works
    c, auth = api_client(web)
    conn = web[1].conn()
    refused = [
        (c.post("/api/v1/media", data=b'{"format": "efi", "label": "' + b"x" * (9 << 20) + b'"}',
                headers=auth, content_type="application/json"), 413, "too_large"),
        (c.post("/api/v1/media", data=b"[", headers=auth, content_type="application/json"),
         400, "invalid"),
        (c.post("/api/v1/media", json=["efi"], headers=auth), 400, "invalid"),
        (c.post("/api/v1/media", json={"format": 1}, headers=auth), 400, "invalid"),
        (c.post("/api/v1/media", json={"format": "efi", "label": "x" * 65}, headers=auth),
         400, "invalid"),
        (c.post("/api/v1/media", json={"format": "efi", "host": "far1",
                                                "address": "192.0.2.300/24"},
                headers=auth), 400, "invalid"),
    ]
    for r, status, code in refused:
        assert (r.status_code, r.json["code"]) == (status, code), r.data[:200]
    assert media.list_tokens(conn) == [] and list(scratch.iterdir()) == []
    answers = [c.post("/api/v1/media", json={"host": None, "format": "efi"}, headers=auth)
               for _ in range(12)]
    assert [r.status_code for r in answers] == [201] * 12
    ids = [int(r.headers["X-Nixie-Media-Token-Id"]) for r in answers]
    assert sorted(t["id"] for t in media.list_tokens(conn)) == sorted(set(ids))
    assert len(set(ids)) == 12 and all(r.data for r in answers)
    assert list(scratch.iterdir()) == []


def test_boot_media_url_without_a_scheme_is_a_clear_error(tmp_path, config_file):
    """boot.media_url: a URL without http:// is a config error (`nixie config check`, the
    settings API), never a crash while writing media."""
    data = json.loads(config_file.read_text())
    data["boot"]["media_url"] = "router.example.com:8081"
    config_file.write_text(json.dumps(data))
    r = run_nixie("config", "check", config=config_file)
    assert r.returncode != 0 and "boot.media_url" in r.stderr and "http://" in r.stderr, r.stderr
    web = make_app(tmp_path / "state")
    c, auth = api_client(web)
    for bad in ("10.0.0.1:8081", "//10.0.0.1:8081", "http:/10.0.0.1", "http://x/?q=1"):
        r = c.patch("/api/v1/settings", json={"boot.media_url": bad}, headers=auth)
        assert (r.status_code, r.json["field"]) == (400, "boot.media_url"), (bad, r.json)
    with pytest.raises(InvalidInput):
        bootmedia.media_script("10.0.0.1:8081", "t" * 32)
    web[1].close()


def test_media_url_grub_cannot_boot_is_an_error_on_the_url_field(tmp_path):
    """An https boot URL (boot.public_url: fine for iPXE scripts) cannot go on media (GRUB
    has no TLS): the API answers 400 naming the `url` field, the form shows it under the
    field; no token is left."""
    app, store, _ = web = make_app(tmp_path / "state",
                                   sections={"boot": {"public_url": "https://boot.example.com"}})
    c, auth = api_client(web)
    r = c.post("/api/v1/media", json={"host": None, "format": "efi", "url": "lan"},
               headers=auth)
    assert r.status_code == 400 and r.json["field"] == "url" and "http://" in r.json["error"]
    page = c.get("/media/").data.decode()
    r = c.post("/media/", data={"csrf_token": csrf_of(page), "host": "", "format": "iso",
                                "url": "lan"})
    assert r.status_code == 400 and "http://" in field_error(r.data.decode(), "url")
    assert media.list_tokens(store.conn()) == []
    store.close()


def test_missing_packaged_boot_binary_is_a_clear_answer(tmp_path):
    """tftp.ipxe_dir without ipxe.lkrn (the ISO's BIOS loader): the API answers 503 naming
    the file, the form flashes it, and no token is left behind (was a 500)."""
    empty = tmp_path / "no-ipxe"
    empty.mkdir()
    app, store, _ = web = make_app(tmp_path / "state", sections={"tftp": {"ipxe_dir": str(empty)}})
    hosts.add_host(store.conn(), "far1", [MAC], "github:me/infra")
    c, auth = api_client(web)
    r = c.post("/api/v1/media", json={"host": "far1", "format": "iso"}, headers=auth)
    assert r.status_code == 503 and r.json["code"] == "unavailable", r.data[:300]
    assert f"{empty}/ipxe.lkrn" in r.json["error"]
    page = c.get("/media/").data.decode()
    r = c.post("/media/", data={"csrf_token": csrf_of(page), "host": "far1", "format": "iso",
                                "url": "lan"})
    assert r.status_code == 503 and f"{empty}/ipxe.lkrn" in r.data.decode()
    assert 'class="flash' in r.data.decode()
    assert media.list_tokens(store.conn()) == []
    store.close()


def test_gateway_or_dns_without_an_address_is_a_field_error(web):
    """Gateway and DNS only apply to a static address: given without one they are refused
    on their field (they were silently dropped and the media used DHCP)."""
    app, store, _ = web
    c, auth = api_client(web)
    page = c.get("/media/").data.decode()
    for field, value in (("gateway", "192.0.2.1"), ("dns", "192.0.2.53")):
        r = c.post("/media/", data={"csrf_token": csrf_of(page), "host": "far1",
                                    "format": "efi", "url": "lan", field: value})
        assert r.status_code == 400 and "address" in field_error(r.data.decode(), field)
        assert f'value="{value}"' in r.data.decode()  # the input is kept
        r = c.post("/api/v1/media", json={"host": "far1", "format": "efi", field: value},
                   headers=auth)
        assert r.status_code == 400 and r.json["field"] == field, r.json
    assert media.list_tokens(store.conn()) == []
