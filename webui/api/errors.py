"""The API's error body, the same everywhere: `{"error": message, "code": code,
"field": name}` (`field` when one input is at fault). `code` is the same word
`nixie --json` prints for the error (`appliance.errors`: invalid, not_found,
conflict, ...); for HTTP-level refusals it is named after the status.

The app's handlers (webui/security.py) answer every refusal under /api/ with it:
appliance errors with their HTTP status (`appliance.errors`: InvalidInput 400,
naming the field at fault, NotFound 404, Conflict 409), the guard's (401, 503),
CSRF (400) and Flask's own (404, 405, 413, 500)."""

from __future__ import annotations

from flask import Response, jsonify

CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media",
         429: "too_many_requests", 500: "internal", 503: "unavailable"}


def api_error(status: int, message: str, field: str | None = None, code: str | None = None
              ) -> tuple[Response, int]:
    body = {"error": message, "code": code or CODES.get(status, "failed"),
            **({"field": field} if field else {})}
    return jsonify(body), status
