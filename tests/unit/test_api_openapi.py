"""The OpenAPI document built from the route table is sound: every reference
resolves, operation ids are unique, each operation documents the status its view
answers with (checked against the live answer for the flakes' 202)."""

from __future__ import annotations

import pytest

from tests.webapp import csrf_of, logged_in_client, make_app
from webui.api import ROUTES


@pytest.fixture
def client(tmp_path):
    app, store, _ = make_app(tmp_path / "state")
    yield logged_in_client(app)
    store.close()


def refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for v in node.values():
            yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_every_reference_resolves_and_ids_are_unique(client):
    doc = client.get("/api/v1/openapi.json").json
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == len(ROUTES) + 1  # + the document itself
    for ops in doc["paths"].values():
        for op in ops.values():
            assert "401" in op["responses"] or op["operationId"] == "openapi"
            assert any(code.startswith("2") for code in op["responses"])


def test_the_documented_status_is_the_answer(client):
    doc = client.get("/api/v1/openapi.json").json
    add = doc["paths"]["/api/v1/flakes"]["post"]
    refresh = doc["paths"]["/api/v1/flakes/{flake_id}/refresh"]["post"]
    for op in (add, refresh):
        assert set(op["responses"]) & {"200", "201", "202"} == {"202"}
        assert "Location" in op["responses"]["202"]["headers"]
        assert op["responses"]["202"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Flake"}
    assert "refresh" not in [p["name"] for p in add["parameters"]]
    flake = doc["components"]["schemas"]["Flake"]["properties"]
    assert flake["eval_state"]["enum"] == ["queued", "evaluating", "idle"]
    csrf = {"X-CSRFToken": csrf_of(client.get("/").data)}
    r = client.post("/api/v1/flakes", json={"url": "/srv/fleet"}, headers=csrf)
    assert r.status_code == 202 and set(r.json) >= set(flake)
    r = client.post(f"/api/v1/flakes/{r.json['id']}/refresh", headers=csrf)
    assert r.status_code == 202
    settings_get = doc["paths"]["/api/v1/settings"]["get"]["responses"]["200"]
    state = settings_get["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][state]["required"]) == {"values", "locked", "apply"}
    assert set(client.get("/api/v1/settings").json) == {"values", "locked", "apply"}
