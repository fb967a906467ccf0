"""The API's route table: `@route(...)` registers a Flask view on the blueprint
and records its OpenAPI operation in `ROUTES`, from which `openapi.py` builds
the document (so the document cannot drift from the routes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@dataclass(frozen=True)
class Operation:
    """One API operation: its Flask rule and what the OpenAPI document says of it."""

    path: str                 # Flask rule under /api/v1, e.g. /hosts/<name>
    method: str               # lower case, as in the OpenAPI document
    summary: str
    tag: str
    operation_id: str         # also the Flask endpoint (api.<operation_id>)
    params: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    headers: dict[str, Any] = field(default_factory=dict)  # of the success answer
    body_media: str = "application/json"
    response_media: str = "application/json"


ROUTES: list[Operation] = []


def route(path: str, method: str, summary: str, *, tag: str, params: list | None = None,
          body: dict | None = None, response: dict | None = None, status: int = 200,
          errors: tuple[int, ...] = (), headers: dict | None = None,
          body_media: str = "application/json", response_media: str = "application/json"
          ) -> Callable:
    """Register a Flask route and its OpenAPI operation."""

    def deco(fn: Callable) -> Callable:
        bp.add_url_rule(path, endpoint=fn.__name__, view_func=fn, methods=[method])
        ROUTES.append(Operation(path=path, method=method.lower(), summary=summary, tag=tag,
                                operation_id=fn.__name__, params=params or [], body=body,
                                response=response, status=status, errors=errors,
                                headers=headers or {}, body_media=body_media,
                                response_media=response_media))
        return fn

    return deco
