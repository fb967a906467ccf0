"""API hygiene, against the real Flask app: the OpenAPI document validates as 3.1
(openapi-spec-validator), every paged list pages the one way (`?limit=&cursor=` →
`{"items", "next_cursor", "limit"}`; the old offset=/before= still work), and every
refusal has the one error body `{"error", "code"[, "field"]}`, whatever raised it."""

from __future__ import annotations

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

from appliance.domain import builds, events, hosts
from tests.webapp import csrf_of, logged_in_client, make_app
from webui.api import ROUTES
from webui.api.args import encode_cursor

PAGED = {"/hosts", "/leases", "/events", "/builds", "/hosts/<name>/events", "/media"}
# small lists with a hard bound of their own: one answer holds all of them
UNPAGED = {"/flakes", "/hosts/<name>/generations", "/machines", "/network/interfaces",
           "/tokens", "/users", "/vpn/peers"}


@pytest.fixture
def web(tmp_path):
    app, store, _ = make_app(tmp_path / "state")
    client = logged_in_client(app)
    yield client, store
    store.close()


def test_openapi_document_validates_as_3_1(web):
    client, _ = web
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    errors = [e.message for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == []
    # what it was: a 3.0.3 label on 3.1 constructs (type lists with "null"), which a
    # 3.0 validator rejects
    assert list(OpenAPIV30SpecValidator({**doc, "openapi": "3.0.3"}).iter_errors())


def test_every_list_is_paged_one_way_or_bounded(web):
    client, _ = web
    doc = client.get("/api/v1/openapi.json").json
    for r in ROUTES:
        if r.method != "get" or r.response is None:
            continue
        schema = r.response
        if schema.get("type") == "array":
            assert r.path in UNPAGED, f"{r.path} lists without paging"
            continue
        if "next_cursor" in schema.get("properties", {}):
            assert r.path in PAGED
            names = {p["name"] for p in r.params if p["in"] == "query"}
            assert {"limit", "cursor"} <= names, r.path
    assert {r.path for r in ROUTES if r.method == "get" and r.response
            and "next_cursor" in r.response.get("properties", {})} == PAGED
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "code"]


def _all_pages(client, url, limit=7):
    seen, cursor, pages = [], None, 0
    while True:
        sep = "&" if "?" in url else "?"
        r = client.get(f"{url}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200, r.json
        body = r.json
        assert set(body) >= {"items", "next_cursor", "limit"} and body["limit"] == limit
        assert len(body["items"]) <= limit
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages


def test_paging_walks_every_list_once(web):
    client, store = web
    conn = store.conn()
    for i in range(20):
        hosts.add_host(conn, f"h{i:02}", f"52:54:00:00:01:{i:02x}", "/f")
    for _ in range(16):
        builds.enqueue(conn, "h03")
    for i in range(30):
        events.record(conn, "host.booting", f"m{i}", host_id=hosts.get_host(conn, "h03")["id"])

    got, pages = _all_pages(client, "/api/v1/hosts")
    assert [h["name"] for h in got] == [f"h{i:02}" for i in range(20)] and pages == 3
    got, pages = _all_pages(client, "/api/v1/builds")
    assert [b["id"] for b in got] == list(range(16, 0, -1)) and pages == 3
    got, _ = _all_pages(client, "/api/v1/events?kind=host.booting")
    assert [e["message"] for e in got] == [f"m{i}" for i in range(29, -1, -1)]
    got, _ = _all_pages(client, "/api/v1/hosts/h03/events")
    ids = [e["id"] for e in got]
    assert ids == sorted(set(ids), reverse=True) and len(ids) >= 30 + 16
    got, pages = _all_pages(client, "/api/v1/leases?all=true")
    assert got == [] and pages == 1
    # the last page says so; a page exactly full says no more when nothing follows
    body = client.get("/api/v1/hosts?limit=20").json
    assert body["next_cursor"] is None and body["total"] == 20
    # the old parameters still page (deprecated in the document)
    assert [h["name"] for h in client.get("/api/v1/hosts?limit=5&offset=15").json["items"]] == \
        [f"h{i}" for i in range(15, 20)]


@pytest.mark.parametrize("cursor", [
    "garbage!!", "x" * 65, encode_cursor("id", 5),  # another list's cursor
    encode_cursor("o", 1).replace("o", "p"), "bzotNQ",  # "o:-5"
    "%00%ff", "b246", encode_cursor("o", 10**30),  # beyond SQLite's integers
])
def test_a_forged_cursor_is_a_clear_400(web, cursor):
    client, _ = web
    r = client.get(f"/api/v1/hosts?cursor={cursor}")
    assert r.status_code == 400
    assert r.json["code"] == "invalid" and r.json["field"] == "cursor", r.json


def test_one_error_body_everywhere(web, tmp_path):
    client, store = web
    csrf = {"X-CSRFToken": csrf_of(client.get("/").data)}
    hosts.add_host(store.conn(), "web1", "52:54:00:00:00:01", "/f")
    anon = client.application.test_client()
    answers = {
        "unknown route": (client.get("/api/v1/nothing-here"), 404, "not_found"),
        "wrong method": (client.delete("/api/v1/openapi.json", headers=csrf), 405,
                         "method_not_allowed"),
        "no login": (anon.get("/api/v1/hosts"), 401, "unauthorized"),
        "no such host": (client.get("/api/v1/hosts/nope"), 404, "not_found"),
        "bad field": (client.post("/api/v1/hosts", json={"name": "x y", "macs": ["zz"],
                                                         "flake": "/f"}, headers=csrf),
                      400, "invalid"),
        "conflict": (client.post("/api/v1/hosts", json={"name": "web1",
                                                        "macs": ["52:54:00:00:00:02"],
                                                        "flake": "/f"}, headers=csrf),
                     409, "conflict"),
        "no csrf": (client.post("/api/v1/hosts", json={}), 400, "invalid"),
        "not json": (client.post("/api/v1/builds", data="[", headers=csrf,
                                 content_type="application/json"), 400, "invalid"),
        "bad limit": (client.get("/api/v1/builds?limit=0"), 400, "invalid"),
        "too big": (client.post("/api/v1/hosts", data=b"{" + b" " * (9 << 20) + b"}",
                                headers=csrf, content_type="application/json"), 413, "too_large"),
        "wrong token": (anon.get("/api/v1/hosts", headers={"Authorization": "Bearer nxt_x"}),
                        401, "unauthorized"),
    }
    for what, (r, status, code) in answers.items():
        assert r.status_code == status, (what, r.status_code, r.data[:200])
        body = r.json
        assert set(body) <= {"error", "code", "field"} and body["error"], (what, body)
        assert body["code"] == code, (what, body)
    assert answers["bad limit"][0].json["field"] == "limit"


def test_every_paged_list_takes_exactly_the_limit_its_document_states(web):
    """The `limit` maximum in the OpenAPI document is what the endpoint takes: that
    many is a page of that size (never cut short), one more is a 400 naming `limit`."""
    client, store = web
    hosts.add_host(store.conn(), "h1", "52:54:00:00:02:01", "/f")
    doc = client.get("/api/v1/openapi.json").json
    for path in sorted(PAGED):
        url = "/api/v1" + path.replace("<name>", "h1")
        op = doc["paths"]["/api/v1" + path.replace("<name>", "{name}")]["get"]
        maximum = next(p["schema"]["maximum"] for p in op["parameters"] if p["name"] == "limit")
        r = client.get(f"{url}?limit={maximum}")
        assert r.status_code == 200 and r.json["limit"] == maximum, (path, r.json)
        r = client.get(f"{url}?limit={maximum + 1}")
        assert (r.status_code, r.json.get("field")) == (400, "limit"), (path, maximum, r.json)
