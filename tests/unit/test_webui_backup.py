"""The Backup page and /api/v1/backup, /api/v1/gc: admin only, CSRF on every form, the
archive a download gives restores to the same rows, a bad upload is refused on its field
with nothing staged, a good one is staged for serve; a huge upload is refused by the real
server before it is read."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from appliance.domain import apitokens, settings, users
from appliance.nix import gc
from appliance.state import backup
from appliance.state.db import Store, now
from tests.unit.test_api_settings import settings_form
from tests.unit.test_web_hardening import BIG, Running, _headers, _oversized_post
from tests.webapp import csrf_of, logged_in_client, make_app, post_form

pytestmark = pytest.mark.unit


@pytest.fixture
def web(tmp_path):
    return make_app(tmp_path / "state")


def test_pages_and_api_need_a_login(web):
    app, _store, _cfg = web
    c = app.test_client()
    logged_in_client(app)  # setup done: the guard now asks for a login
    r = c.get("/backup/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    for method, path in (("get", "/api/v1/backup"), ("get", "/api/v1/gc")):
        assert getattr(c, method)(path).status_code == 401, path
    for path in ("/api/v1/backup/restore", "/api/v1/gc"):  # no session: the CSRF check refuses
        assert c.post(path, data=b"x").status_code in (400, 401), path
    r = c.post("/backup/download")
    assert r.status_code in (302, 400) and not r.data.startswith(b"\x1f\x8b")


def test_every_form_needs_its_csrf_token(web):
    app, store, cfg = web
    c = logged_in_client(app)
    for path in ("/backup/download", "/backup/gc"):
        r = c.post(path, data={})
        assert r.status_code == 400, path
    r = c.post("/backup/restore", data={"file": (io.BytesIO(b"x"), "b.tar.gz")},
               content_type="multipart/form-data")
    assert r.status_code == 400
    assert not gc.is_requested(store.conn())
    assert not backup.pending_path(cfg.state_dir).exists()


def test_download_restores_to_the_same_rows(web, tmp_path):
    app, store, cfg = web
    c = logged_in_client(app)
    r = post_form(c, "/backup/download", {}, page="/backup/")
    assert r.status_code == 200 and r.data[:2] == b"\x1f\x8b"
    assert "attachment" in r.headers["Content-Disposition"]
    assert r.headers["Content-Type"] == "application/gzip"
    res = backup.restore(io.BytesIO(r.data), tmp_path / "copy")
    assert res.files >= 1 and res.schema_version > 0
    copy = Store(tmp_path / "copy" / "nixie.db").conn()
    assert [u["username"] for u in copy.execute("SELECT username FROM users")] == ["admin"]
    assert copy.execute("SELECT kind FROM events WHERE kind = 'backup.made'").fetchone() is None
    assert store.conn().execute("SELECT count(*) FROM events WHERE kind = 'backup.made'").fetchone()[0] == 1


def test_bad_upload_shows_the_error_on_its_field_and_stages_nothing(web):
    app, _store, cfg = web
    c = logged_in_client(app)
    token = csrf_of(c.get("/backup/").data)
    r = c.post("/backup/restore", data={"csrf_token": token,
                                        "file": (io.BytesIO(b"\x1f\x8bjunk" * 999), "b.tar.gz")},
               content_type="multipart/form-data")
    assert r.status_code == 400
    assert b"not a router backup" in r.data and b"nothing was restored" in r.data
    assert not backup.pending_path(cfg.state_dir).exists()
    assert not list(Path(cfg.state_dir).glob(".nixie-restore-*"))


def test_good_upload_is_staged_and_larger_than_any_other_form(web, tmp_path):
    app, _store, cfg = web
    c = logged_in_client(app)
    archive = io.BytesIO()
    backup.backup(cfg.state_dir, archive)
    # padded past the app's 8 MiB form limit with a member nobody needs: still accepted
    data = archive.getvalue()
    big = tmp_path / "big.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(big, "w") as dst:
        members = src.getmembers()
        for m in members[:-1]:
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        pad = tarfile.TarInfo("logs/pad")
        pad.size = 9 << 20
        dst.addfile(pad, io.BytesIO(b"\0" * pad.size))
        manifest = json.loads(src.extractfile(members[-1]).read())
        manifest["files"]["logs/pad"] = {"size": pad.size, "mode": 0o600,
                                         "sha256": hashlib.sha256(b"\0" * pad.size).hexdigest()}
        raw = json.dumps(manifest).encode()
        info = tarfile.TarInfo(backup.MANIFEST)
        info.size = len(raw)
        dst.addfile(info, io.BytesIO(raw))
    token = csrf_of(c.get("/backup/").data)
    r = c.post("/backup/restore", data={"csrf_token": token, "file": (big.open("rb"), "big.tar")},
               content_type="multipart/form-data")
    assert r.status_code == 302, r.data[:500]
    assert backup.pending_path(cfg.state_dir).exists()
    page = c.get("/backup/").data
    assert b"staged" in page


def test_api_backup_restore_and_gc_with_a_token(web):
    app, store, cfg = web
    logged_in_client(app)
    uid = store.conn().execute("SELECT id FROM users").fetchone()[0]
    _tok, secret = apitokens.create_token(store.conn(), uid, "ci")
    auth = {"Authorization": f"Bearer {secret}"}
    c = app.test_client()
    r = c.get("/api/v1/backup", headers=auth)
    assert r.status_code == 200 and r.data[:2] == b"\x1f\x8b"
    bad = c.post("/api/v1/backup/restore", headers=auth, data=b"junk" * 100,
                 content_type="application/gzip")
    assert bad.status_code == 400 and bad.json["field"] == "file"
    assert not backup.pending_path(cfg.state_dir).exists()
    ok = c.post("/api/v1/backup/restore", headers=auth, data=r.data, content_type="application/gzip")
    assert ok.status_code == 202 and ok.json["schema_version"] > 0
    assert backup.pending_path(cfg.state_dir).exists()
    g = c.post("/api/v1/gc", headers=auth)
    assert g.status_code == 202 and g.json["requested"] is True
    assert g.json["disk"]["filesystems"] and g.json["disk"]["state_dir"]["bytes"] > 0
    assert gc.is_requested(store.conn())
    doc = c.get("/api/v1/openapi.json", headers=auth).json
    assert "application/gzip" in doc["paths"]["/api/v1/backup/restore"]["post"]["requestBody"]["content"]
    assert users.count_users(store.conn()) == 1


def test_a_huge_upload_is_refused_before_it_is_read(tmp_path):
    with Running(tmp_path, max_restore_bytes=4 << 20) as run:
        for path in ("/backup/restore", "/api/v1/backup/restore"):
            answer, sent = _oversized_post(run.port, path, BIG, tls=True)
            assert _headers(answer)[0] == 413, path
            assert sent < BIG // 2


def _token_client(app, store):
    logged_in_client(app)  # setup done
    uid = store.conn().execute("SELECT id FROM users").fetchone()[0]
    _tok, secret = apitokens.create_token(store.conn(), uid, "ci")
    return app.test_client(), {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("limit, sent, status", [
    (1 << 20, 2 << 20, 413),  # over web.max_restore_bytes: refused, never read
    (16 << 20, 9 << 20, 400),  # over every other path's 8 MiB, within its own: read, checked
])
def test_an_api_restore_takes_its_own_limit_and_stages_nothing_refused(tmp_path, limit, sent,
                                                                       status):
    """Abuse, in the app itself (behind the HTTP server's per-path limit): the restore
    endpoint takes web.max_restore_bytes, no more (413, nothing staged), and not the 8 MiB
    of the other paths."""
    app, store, cfg = make_app(tmp_path / "state", sections={"web": {"max_restore_bytes": limit}})
    c, auth = _token_client(app, store)
    r = c.post("/api/v1/backup/restore", headers=auth, data=b"\0" * sent,
               content_type="application/gzip")
    assert r.status_code == status, r.data[:200]
    assert r.json["code"] == {413: "too_large", 400: "invalid"}[status]
    assert not backup.pending_path(cfg.state_dir).exists()
    store.close()


def test_a_flood_of_restores_stages_one_archive_and_leaves_no_upload_behind(web):
    """Abuse: POST /api/v1/backup/restore hammered, good archives and junk mixed. Each
    upload is written to the state dir to be checked; what stays is the one staged
    archive (the last good one), never an upload file per request."""
    app, store, cfg = web
    c, auth = _token_client(app, store)
    archive = c.get("/api/v1/backup", headers=auth).data
    codes = [c.post("/api/v1/backup/restore", headers=auth, content_type="application/gzip",
                    data=archive if i % 2 else archive[: len(archive) // 2]).status_code
             for i in range(12)]
    assert codes == [400, 202] * 6
    left = sorted(p.name for p in Path(cfg.state_dir).iterdir()
                  if p.name.startswith(backup.RESTORE_PREFIX))
    assert left == [backup.pending_path(cfg.state_dir).name]
    assert backup.pending_path(cfg.state_dir).read_bytes() == archive


def test_a_flood_of_gc_requests_is_one_pending_request(web):
    """Abuse: POST /api/v1/gc hammered. Every answer is 202 and no request runs nix: what
    serve's gc service finds is one pending request (a flag, not a queue)."""
    app, store, cfg = web
    c, auth = _token_client(app, store)
    answers = [c.post("/api/v1/gc", headers=auth) for _ in range(40)]
    assert {(r.status_code, r.json["requested"]) for r in answers} == {(202, True)}
    conn = store.conn()
    assert conn.execute("SELECT count(*) FROM settings WHERE key LIKE 'gc.%'").fetchone()[0] == 1
    assert gc.GcService(cfg, store).due(conn, started=now()) == "request"
    assert gc.last(conn) is None  # no request ran a collection


def test_retention_and_gc_settings_are_on_the_settings_page(web):
    app, store, cfg = web
    c = logged_in_client(app)
    form = settings_form(c)
    assert form["retention_event_days"] == "90" and form["gc_disk_warn_percent"] == "90"
    bad = {**form, "retention_event_days": "0"}
    r = post_form(c, "/settings/", bad)
    assert r.status_code == 400 and b"retention_event_days" in r.data
    r = post_form(c, "/settings/", {**form, "retention_event_days": "30", "gc_interval_seconds": "0",
                                    "gc_disk_warn_percent": "75"})
    assert r.status_code in (200, 302), r.data[:500]
    eff = settings.effective_config(cfg, store.conn())
    assert (eff.retention.event_days, eff.gc.interval_seconds, eff.gc.disk_warn_percent) == (30, 0, 75)


def test_the_413_names_the_limit_of_the_path_that_refused(tmp_path):
    """The restore paths take web.max_restore_bytes (here 2 MiB), every other path 8 MiB:
    the refusal, page or API error, names the limit that applied, not always 8 MB."""
    app, store, cfg = make_app(tmp_path / "state", sections={"web": {"max_restore_bytes": 2 << 20}})
    browser = logged_in_client(app)
    uid = store.conn().execute("SELECT id FROM users").fetchone()[0]
    c, auth = app.test_client(), {
        "Authorization": f"Bearer {apitokens.create_token(store.conn(), uid, 'ci')[1]}"}
    page = browser.get("/backup/")
    r = browser.post("/backup/restore", data={"csrf_token": csrf_of(page.data),
                                              "file": (io.BytesIO(b"\0" * (3 << 20)), "b.tgz")})
    text = r.data.decode()
    assert r.status_code == 413 and "2.0 MiB" in text and "8 MB" not in text, text
    r = c.post("/api/v1/backup/restore", headers=auth, data=b"\0" * (3 << 20),
               content_type="application/gzip")
    assert r.status_code == 413 and "2.0 MiB" in r.json["error"], r.json
    r = c.post("/api/v1/hosts", headers=auth, data=b"\0" * (9 << 20),
               content_type="application/json")
    assert r.status_code == 413 and "8.0 MiB" in r.json["error"], r.json
    store.close()


def test_gc_state_uses_the_gc_services_last_measurement(tmp_path):
    """GET /api/v1/gc and the Backup page show the disk use serve's gc service measured
    last (with its time), without walking the state dir again; only without one is it
    measured on the spot."""
    measured = {"state_dir": {"path": "/x", "bytes": 424242}, "warn_percent": 90,
                "filesystems": [], "warnings": [], "measured_at": now() - 180}
    health = {"ok": True, "services": {"gc": {"state": "running",
                                              "stats": {"disk": measured}}}}
    app, store, cfg = make_app(tmp_path / "state", health=lambda: health)
    (Path(cfg.state_dir) / "big").write_bytes(b"x" * (3 << 20))
    browser = logged_in_client(app)
    assert browser.get("/api/v1/gc").json["disk"] == measured
    html = browser.get("/backup/").data.decode()
    assert "414.3 KiB" in html and "measured 3" in html, html[html.find('id="disk"'):][:800]
    store.close()
    app, store, cfg = make_app(tmp_path / "state2")  # no gc service figure: measured now
    (Path(cfg.state_dir) / "big").write_bytes(b"x" * (3 << 20))
    c, auth = _token_client(app, store)
    disk = c.get("/api/v1/gc", headers=auth).json["disk"]
    assert disk["state_dir"]["bytes"] >= 3 << 20 and now() - disk["measured_at"] < 30
    store.close()
