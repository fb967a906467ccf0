"""REST API `/api/v1/...`: JSON over the same appliance functions as the UI and CLI.

Routes are declared once with `@route(...)` (registry.py), which registers the
Flask view and its OpenAPI operation; `/api/v1/openapi.json` (openapi.py) is
built from that table, so the document cannot drift from the routes. One module
per resource; request parsing in args.py, record schemas in schemas.py, the
error body in errors.py (the app's error handlers in webui/security.py answer
with it). Authentication is the guard's (webui/security.py): a session (with
X-CSRFToken on unsafe methods) or `Authorization: Bearer <API token>`.
"""

from . import (
    backup,
    builds,
    cache,
    events,
    flakes,
    hosts,
    leases,
    machines,
    media,
    network,
    power,
    settings,
    status,
    tokens,
    users,
    vpn,
)
from .openapi import openapi_document
from .registry import ROUTES, Operation, bp

RESOURCES = (status, hosts, power, flakes, builds, leases, network, events, settings, tokens,
             machines, cache)
RESOURCES += (vpn, users, backup, media)

__all__ = ["ROUTES", "RESOURCES", "Operation", "bp", "openapi_document"]
