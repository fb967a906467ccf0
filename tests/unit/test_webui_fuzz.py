"""A hypothesis fuzzer driven by the OpenAPI document: for every operation it
generates path, query and body values from the declared schemas — and, half
the time, values of the wrong type or shape — and no request may end in a 5xx.

No request runs nix (flakes are only queued for nixie serve's evaluator); nix is
pointed at an empty directory here all the same, so a stray call would fail
cleanly rather than reach for the network. Wake-on-LAN goes out on loopback only."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.domain import apitokens, hosts
from tests.webapp import logged_in_client, make_app
from webui.api import ROUTES, openapi_document
from webui.api.openapi import openapi_path

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def resolve(doc, schema):
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(doc, schema, depth=0):
    """A strategy for values that fit `schema` (the subset our document uses)."""
    schema = resolve(doc, schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    t = schema.get("type")
    if isinstance(t, list):
        return st.one_of([from_schema(doc, {**schema, "type": x}, depth) for x in t])
    if t == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(max_size=40) | st.sampled_from(["demo", "52:54:00:00:00:01", "/srv/fleet",
                                                       "nixosConfigurations.demo", "127.0.0.1"])
    if t == "integer":
        return st.integers(schema.get("minimum", -2**31), schema.get("maximum", 2**31))
    if t == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "array":
        return st.lists(from_schema(doc, schema.get("items", {}), depth + 1), max_size=3)
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if not props or depth > 2:
            return st.dictionaries(st.text(max_size=10), ANY_JSON, max_size=3)
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(doc, v, depth + 1) for k, v in props.items() if k in required},
            optional={k: from_schema(doc, v, depth + 1) for k, v in props.items() if k not in required})
    return ANY_JSON


def fuzzy(doc, schema):
    return from_schema(doc, schema) | ANY_JSON


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    state = tmp_path_factory.mktemp("fuzz") / "state"
    app, store, cfg = make_app(state)
    empty = tmp_path_factory.mktemp("nonix")
    object.__setattr__(cfg.nix, "_values", {**cfg.nix.to_dict(), "bin_dir": str(empty)})
    logged_in_client(app)
    conn = store.conn()
    uid = conn.execute("SELECT id FROM users").fetchone()[0]
    _, secret = apitokens.create_token(conn, uid, "fuzz")
    hosts.add_host(conn, "demo", "52:54:00:00:00:01", "/srv/fleet")
    with app.test_request_context():
        doc = openapi_document()
    yield app, doc, {"Authorization": f"Bearer {secret}"}
    store.close()


def operations():
    return [(r.method, openapi_path(r.path)) for r in ROUTES]


@pytest.mark.parametrize("method,path", operations())
def test_api_never_fails_with_5xx(api, method, path):
    app, doc, auth = api
    op = doc["paths"][path][method]
    client = app.test_client()

    params = op.get("parameters", [])
    body_schema = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        url = path
        query = {}
        for prm in params:
            if prm["in"] == "path":
                v = data.draw(from_schema(doc, prm["schema"]) | st.text(min_size=1, max_size=20)
                              | st.integers(2**62, 10**40))  # ids no database row can have
                url = url.replace("{" + prm["name"] + "}", quote(str(v), safe="") or "x")
            elif data.draw(st.booleans()):
                v = data.draw(fuzzy(doc, prm["schema"]))
                query[prm["name"]] = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
        kwargs = {"query_string": query, "headers": auth}
        if body_schema is not None:
            body = data.draw(fuzzy(doc, body_schema))
            kwargs["data"] = json.dumps(body)
            kwargs["content_type"] = "application/json"
        r = client.open(url, method=method.upper(), **kwargs)
        if r.status_code == 502 and url.endswith("/wol"):
            return  # the documented answer when the kernel refuses the broadcast
        assert r.status_code < 500, f"{method.upper()} {url} {kwargs} -> {r.status_code} {r.data[:300]!r}"
        if r.status_code >= 400:
            assert "error" in r.json, r.data[:200]

    run()
