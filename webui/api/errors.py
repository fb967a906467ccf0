"""The API's errors as JSON: `{"error": message, "field": name}`.

Appliance errors carry their HTTP status (`appliance.errors`): InvalidInput
400 (with the field at fault), NotFound 404, Conflict 409; the guard's
refusals (401, 503) and Flask's own (404, 405, 413, 500) use the same body."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from appliance.errors import NixieError


def api_error(status: int, message: str, field: str | None = None, **extra) -> tuple[Response, int]:
    body = {"error": message, **({"field": field} if field else {}), **extra}
    return jsonify(body), status


def from_appliance_error(e: NixieError) -> tuple[Response, int]:
    return api_error(e.http_status, str(e), getattr(e, "field", None))


def init_blueprint(bp: Blueprint) -> None:
    bp.register_error_handler(NixieError, from_appliance_error)
