"""Flakes through the API and the Flakes page: adding or refreshing one only queues
its evaluation (202, no `nix` in the request); what `nixie serve`'s evaluator later
records (the real `nix` on a local flake) is what the API and the page show."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.domain import apitokens, flakes
from appliance.nix import flake_eval
from appliance.nix.command import SINGLE_USER_OFFLINE, Nix
from tests.webapp import csrf_of, logged_in_client, make_app, post_form

UNREACHABLE = "git+https://flakes.nixie.invalid/fleet"  # .invalid never resolves
MAC = "52:54:00:12:34:56"
FLAKE = """{
  outputs = { self }: {
    nixosConfigurations.demo = { config.nixie.netboot.macs = [ "@MAC@" ]; };
    nixosConfigurations.other = { };
  };
}
""".replace("@MAC@", MAC)
BROKEN = "{ outputs = { self }: { nixosConfigurations = throw \"no fleet here\"; }; }\n"

needs_nix = pytest.mark.skipif(shutil.which("nix") is None, reason="nix is not installed")


@pytest.fixture
def web(tmp_path):
    app, store, cfg = make_app(tmp_path / "state")
    client = logged_in_client(app)
    yield app, store, cfg, client, {"X-CSRFToken": csrf_of(client.get("/").data)}
    store.close()


def evaluator(cfg) -> Nix:
    """The Nix the build worker's evaluator would use for this config (no daemon,
    no sandbox, no substituters: the lab's settings)."""
    nix = Nix.from_config(cfg)
    nix.extra_config = "\n".join(x for x in (nix.extra_config, SINGLE_USER_OFFLINE) if x)
    return nix


def local_flake(tmp_path, text: str, name: str = "fleet") -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "flake.nix").write_text(text)
    return f"path:{d}"


def test_adding_a_flake_answers_202_queued_without_running_nix(web):
    _, store, _, client, csrf = web
    r = client.post("/api/v1/flakes", json={"url": UNREACHABLE}, headers=csrf)
    assert r.status_code == 202, r.json
    f = r.json
    assert (f["url"], f["eval_state"], f["last_error"], f["configurations"], f["macs"]) == (
        UNREACHABLE, "queued", None, [], {})
    assert r.headers["Location"].endswith(f"/api/v1/flakes/{f['id']}")
    followed = client.get(r.headers["Location"]).json
    assert followed["eval_state"] == "queued" and followed["last_refresh"] is None
    # nothing evaluated it: no refresh recorded, no refresh event
    kinds = [row[0] for row in store.conn().execute("SELECT kind FROM events")]
    assert "flake.added" in kinds
    assert not [k for k in kinds if k.startswith("flake.refresh")], kinds
    # the same URL again is a conflict; a bad one names the field
    r = client.post("/api/v1/flakes", json={"url": UNREACHABLE}, headers=csrf)
    assert r.status_code == 409 and "already added" in r.json["error"]
    r = client.post("/api/v1/flakes", json={"url": "not a url"}, headers=csrf)
    assert r.status_code == 400 and r.json["field"] == "url"


def test_refresh_answers_202_and_queues_an_evaluation(web):
    _, store, _, client, csrf = web
    conn = store.conn()
    f = flakes.add_flake(conn, UNREACHABLE)
    r = client.post(f"/api/v1/flakes/{f['id']}/refresh", headers=csrf)
    assert r.status_code == 202 and r.json["eval_state"] == "queued"  # already queued: stays
    assert r.headers["Location"].endswith(f"/api/v1/flakes/{f['id']}")
    # an evaluated (idle) flake goes back to the queue
    conn.execute("UPDATE flakes SET eval_state = 'idle' WHERE id = ?", (f["id"],))
    assert client.get(f"/api/v1/flakes/{f['id']}").json["eval_state"] == "idle"
    r = client.post(f"/api/v1/flakes/{f['id']}/refresh", headers=csrf)
    assert r.status_code == 202 and r.json["eval_state"] == "queued"
    assert [x["eval_state"] for x in client.get("/api/v1/flakes").json] == ["queued"]
    assert client.post("/api/v1/flakes/999/refresh", headers=csrf).status_code == 404
    assert not conn.execute("SELECT 1 FROM events WHERE kind LIKE 'flake.refresh%'").fetchone()


def test_flakes_page_shows_evaluating_and_follows_the_queue(web):
    _, store, _, client, _ = web
    r = post_form(client, "/flakes/", {"url": UNREACHABLE})
    assert r.status_code == 302
    page = client.get("/flakes/").data.decode()
    assert f"Flake {UNREACHABLE} added; evaluating it." in page
    card = page.split('class="card flake"')[1]
    assert 'data-eval-state="queued"' in card and "evaluating…" in card
    assert "nixie serve is not running" in card  # no heartbeat: nothing will evaluate it now
    # the page follows the queue: app.js polls the API; without JS a meta refresh
    assert 'id="flakes" data-poll-url="/api/v1/flakes" data-pending="1"' in page
    assert '<noscript><meta http-equiv="refresh"' in page
    assert "<script>" not in page  # the CSP allows no inline script
    r = post_form(client, f"/flakes/{flakes.get_flake(store.conn(), UNREACHABLE)['id']}/refresh",
                  {}, page="/flakes/")
    assert r.status_code == 302
    assert f"Evaluating {UNREACHABLE} again." in client.get("/flakes/").data.decode()


@needs_nix
def test_what_the_evaluator_records_is_what_the_api_and_page_show(web, tmp_path):
    _, store, cfg, client, csrf = web
    conn = store.conn()
    good = local_flake(tmp_path, FLAKE)
    broken = local_flake(tmp_path, BROKEN, "broken")
    ids = {}
    for url in (good, broken):
        r = client.post("/api/v1/flakes", json={"url": url}, headers=csrf)
        assert r.status_code == 202 and r.json["eval_state"] == "queued"
        ids[url] = r.json["id"]
    nix = evaluator(cfg)
    # what serve's evaluator thread does: claim the oldest queued flake, evaluate it
    while flake_eval.evaluate_next(conn, nix) is not None:
        pass
    f = client.get(f"/api/v1/flakes/{ids[good]}").json
    assert f["eval_state"] == "idle" and f["last_error"] is None, f
    assert f["configurations"] == ["demo", "other"] and f["macs"] == {"demo": [MAC]}
    b = client.get(f"/api/v1/flakes/{ids[broken]}").json
    assert b["eval_state"] == "idle" and "no fleet here" in b["last_error"], b
    page = client.get("/flakes/").data.decode()
    assert "data-pending" not in page and "<noscript><meta" not in page
    assert "evaluating…" not in page
    good_card = page.split(f'id="flake-{ids[good]}"')[1].split("</section>")[0]
    assert 'data-eval-state="idle"' in good_card and ">demo</td>" in good_card
    assert MAC in good_card and "Bind a host" in good_card
    broken_card = page.split(f'id="flake-{ids[broken]}"')[1].split("</section>")[0]
    assert "Last evaluation failed" in broken_card and "no fleet here" in broken_card
    # a refresh queues it again; the listing stays shown meanwhile
    r = client.post(f"/api/v1/flakes/{ids[good]}/refresh", headers=csrf)
    assert r.status_code == 202 and r.json["eval_state"] == "queued"
    assert r.json["configurations"] == ["demo", "other"]
    page = client.get("/flakes/").data.decode()
    assert 'data-pending="1"' in page and "the listing of" in page


# ---------------------------------------------------------------- abuse


def evaluations(conn, nix: Nix) -> int:
    """How many evaluations serve's evaluator finds queued and runs, one after another."""
    n = 0
    while flake_eval.evaluate_next(conn, nix) is not None:
        n += 1
    return n


def test_a_flood_of_refreshes_queues_one_evaluation(web, tmp_path):
    app, store, _, _, _ = web
    conn = store.conn()
    uid = conn.execute("SELECT id FROM users").fetchone()[0]
    auth = {"Authorization": f"Bearer {apitokens.create_token(conn, uid, 'flood')[1]}"}
    no_nix = Nix(bin_dir=str(tmp_path))  # an evaluation here fails at once, offline
    f = flakes.add_flake(conn, UNREACHABLE)
    assert evaluations(conn, no_nix) == 1  # the evaluation the add queued; idle now
    url = f"/api/v1/flakes/{f['id']}/refresh"

    def flood(n: int) -> list[tuple[int, str]]:
        client = app.test_client()
        return [(r.status_code, r.json["eval_state"])
                for r in (client.post(url, headers=auth) for _ in range(n))]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for part in pool.map(flood, [25] * 8) for a in part]
    assert len(answers) == 200 and set(answers) == {(202, "queued")}
    # 200 requests, one evaluation for the evaluator to run
    assert evaluations(conn, no_nix) == 1
    # while one is running, a flood queues none behind it
    assert flood(1) == [(202, "queued")]
    assert flakes.claim_evaluation(conn)["id"] == f["id"]  # the evaluator takes it
    with ThreadPoolExecutor(4) as pool:
        answers = [a for part in pool.map(flood, [25] * 4) for a in part]
    assert set(answers) == {(202, "evaluating")}
    flakes.finish_evaluation(conn, f["id"])
    assert evaluations(conn, no_nix) == 0
    # nothing but the evaluations wrote events: the add, then two failed refreshes
    kinds = [row[0] for row in conn.execute("SELECT kind FROM events WHERE kind LIKE 'flake.%'")]
    assert sorted(kinds) == ["flake.added", "flake.refresh_failed", "flake.refresh_failed"]


def test_oversized_flake_requests_are_refused_and_store_nothing(web):
    _, store, _, client, csrf = web
    huge = json.dumps({"url": "path:/srv/" + "x" * (9 << 20)})  # over the 8 MB body limit
    r = client.post("/api/v1/flakes", data=huge, content_type="application/json", headers=csrf)
    assert r.status_code == 413 and r.json["error"].startswith("request body too large")
    # a body within the limit carrying a URL no flake has
    r = client.post("/api/v1/flakes", json={"url": "path:/srv/" + "x" * (1 << 20)}, headers=csrf)
    assert r.status_code == 400 and r.json["field"] == "url"
    # a flake id no database row can have is no flake (not an overflow in the query)
    for flake_id in (str(2**63), str(10**30), "9" * 5000):
        r = client.post(f"/api/v1/flakes/{flake_id}/refresh", headers=csrf)
        assert r.status_code == 404 and "error" in r.json
        assert client.get(f"/api/v1/flakes/{flake_id}").status_code == 404
        r = client.post(f"/flakes/{flake_id}/refresh", data={"csrf_token": csrf["X-CSRFToken"]})
        assert r.status_code == 404
    assert client.get("/api/v1/flakes").json == []
    assert "flake.added" not in [row[0] for row in store.conn().execute("SELECT kind FROM events")]
