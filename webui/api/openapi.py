"""`/api/v1/openapi.json`: the OpenAPI document, built from the route table."""

from __future__ import annotations

import re
from typing import Any

from flask import jsonify

from .registry import ROUTES, Operation, bp
from .schemas import SCHEMAS, ref

ERROR = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}


def openapi_path(rule: str) -> str:
    """/hosts/<name> -> /api/v1/hosts/{name}"""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", bp.url_prefix + rule)


def operation(r: Operation) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": r.operation_id, "summary": r.summary, "tags": [r.tag],
                          "parameters": r.params}
    if r.body is not None:
        op["requestBody"] = {"required": True, "content": {r.body_media: {"schema": r.body}}}
    ok: dict[str, Any] = {"description": "success"}
    if r.response is not None and r.status != 204:
        ok["content"] = {r.response_media: {"schema": r.response}}
    if r.headers:
        ok["headers"] = r.headers
    op["responses"] = {str(r.status): ok, "401": ERROR, **{str(code): ERROR for code in r.errors}}
    return op


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict] = {}
    for r in ROUTES:
        paths.setdefault(openapi_path(r.path), {})[r.method] = operation(r)
    paths[openapi_path("/openapi.json")] = {"get": {
        "operationId": "openapi", "summary": "This document", "tags": ["meta"], "parameters": [],
        "responses": {"200": {"description": "the OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nixie Router API", "version": "1",
                 "description": "Everything the admin UI does. Authenticate with a session "
                                "(send X-CSRFToken on unsafe methods) or with "
                                "`Authorization: Bearer <API token>` (create tokens in the UI)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "nixie_session"}},
            "schemas": SCHEMAS},
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())
