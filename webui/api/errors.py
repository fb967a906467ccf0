"""The API's error body: `{"error": message, "field": name}`.

The app's handlers (webui/security.py) answer every refusal under /api/ with it:
appliance errors with their HTTP status (`appliance.errors`: InvalidInput 400,
naming the field at fault, NotFound 404, Conflict 409), the guard's (401, 503),
CSRF (400) and Flask's own (404, 405, 413, 500)."""

from __future__ import annotations

from flask import Response, jsonify


def api_error(status: int, message: str, field: str | None = None) -> tuple[Response, int]:
    body = {"error": message, **({"field": field} if field else {})}
    return jsonify(body), status
