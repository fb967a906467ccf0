"""Cancelling a build from the web UI and the API (the CLI's `nixie build cancel`
calls the same `builds.cancel`; tests/netns/test_build_stream.py stops a real nix)."""

from __future__ import annotations

import pytest

from appliance.domain import apitokens, builds, hosts
from appliance.nix.buildworker import claim_next
from tests.webapp import csrf_of, logged_in_client, make_app


@pytest.fixture
def web(tmp_path):
    app, store, _ = make_app(tmp_path / "state")
    client = logged_in_client(app)
    hosts.add_host(store.conn(), "web1", "52:54:00:00:00:01", "/f")
    yield client, store
    store.close()


def test_cancel_from_the_build_page_needs_csrf(web):
    client, store = web
    b = builds.enqueue(store.conn(), "web1")
    page = client.get(f"/builds/{b['id']}").data.decode()
    assert 'id="build-cancel"' in page
    # forged: no token, or another session's
    assert client.post(f"/builds/{b['id']}/cancel").status_code == 400
    assert client.post(f"/builds/{b['id']}/cancel",
                       data={"csrf_token": "IjAwMDAi.forged.token"}).status_code == 400
    assert builds.get_build(store.conn(), b["id"])["status"] == "queued"
    r = client.post(f"/builds/{b['id']}/cancel", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).data.decode()
    assert "cancelled" in page and 'id="build-cancel"' not in page
    assert builds.get_build(store.conn(), b["id"])["status"] == "cancelled"
    assert claim_next(store.conn()) is None  # no build worker takes it up
    # again: said plainly, nothing changes
    r = client.post(f"/builds/{b['id']}/cancel", data={"csrf_token": csrf_of(page)},
                    follow_redirects=True)
    assert "already cancelled" in r.data.decode()


def test_cancel_over_the_api(web):
    client, store = web
    b = builds.enqueue(store.conn(), "web1")
    anon = client.application.test_client()
    assert anon.post(f"/api/v1/builds/{b['id']}/cancel").status_code in (400, 401)
    assert client.post(f"/api/v1/builds/{b['id']}/cancel").json["code"] == "invalid"  # CSRF
    assert builds.get_build(store.conn(), b["id"])["status"] == "queued"
    admin = store.conn().execute("SELECT id FROM users").fetchone()["id"]
    _row, secret = apitokens.create_token(store.conn(), admin, "ci")
    auth = {"Authorization": f"Bearer {secret}"}
    r = anon.post(f"/api/v1/builds/{b['id']}/cancel", headers=auth)
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    r = anon.post(f"/api/v1/builds/{b['id']}/cancel", headers=auth)
    assert r.status_code == 409 and r.json["code"] == "conflict"
    r = anon.post("/api/v1/builds/999/cancel", headers=auth)
    assert r.status_code == 404 and r.json["code"] == "not_found"
    assert claim_next(store.conn()) is None  # the cancelled build is no worker's to take
    # a finished build keeps what it was
    done = builds.enqueue(store.conn(), "web1")
    store.conn().execute("UPDATE builds SET status = 'succeeded' WHERE id = ?", (done["id"],))
    assert anon.post(f"/api/v1/builds/{done['id']}/cancel", headers=auth).status_code == 409
    assert builds.get_build(store.conn(), done["id"])["status"] == "succeeded"


def test_a_flood_of_cancels_cancels_once(web):
    """Abuse: POST cancel hammered (a replayed request). The build is cancelled once, with
    one event; every other answer is 409 and changes nothing; forged ids are 404."""
    client, store = web
    b = builds.enqueue(store.conn(), "web1")
    admin = store.conn().execute("SELECT id FROM users").fetchone()["id"]
    auth = {"Authorization": f"Bearer {apitokens.create_token(store.conn(), admin, 'ci')[1]}"}
    anon = client.application.test_client()
    codes = [anon.post(f"/api/v1/builds/{b['id']}/cancel", headers=auth).status_code
             for _ in range(30)]
    assert codes.count(200) == 1 and codes.count(409) == 29, codes
    conn = store.conn()
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'build.cancelled'"
                        ).fetchone()[0] == 1
    for forged in ("0", "-1", "99999999999999999999", "1.5", "x"):
        assert anon.post(f"/api/v1/builds/{forged}/cancel", headers=auth).status_code == 404
