"""Rendered page parts shared by every viewer for up to a second.

The dashboard body and the hosts table are the same for every admin; rendering
them once a second (per URL) instead of once per request is what keeps many
viewers (a wall screen, twenty admins) cheap. A change made through this app
drops every cached part of this process at once, and for the next
`FRESH_SECONDS` the admin who made it gets freshly rendered parts from every
web worker process (a mark in their session), so the page they are sent back to
shows the change; a change from another process (the CLI, the DHCP server)
shows within `FRESH_SECONDS`. Parts never hold forms, CSRF tokens or flashed
messages.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from flask import current_app, session
from markupsafe import Markup

FRESH_SECONDS = 1.0
MAX_PARTS = 256
_lock = threading.Lock()


def _parts() -> OrderedDict:
    return current_app.extensions.setdefault("nixie_fragments", OrderedDict())


def cached(key: str, render: Callable[[], str]) -> Markup:
    parts = _parts()
    t = time.monotonic()
    if not _changed_lately():
        with _lock:
            hit = parts.get(key)
            if hit is not None and t - hit[0] < FRESH_SECONDS:
                parts.move_to_end(key)  # least recently used goes first
                return hit[1]
    html = Markup(render())
    with _lock:
        parts[key] = (t, html)
        parts.move_to_end(key)
        while len(parts) > MAX_PARTS:
            parts.popitem(last=False)
    return html


def mark_changed() -> None:
    """This admin just changed something: their next pages are rendered fresh."""
    session["changed_at"] = time.time()


def _changed_lately() -> bool:
    t = session.get("changed_at")
    return isinstance(t, float) and 0 <= time.time() - t < FRESH_SECONDS + 1


def forget_all() -> None:
    with _lock:
        _parts().clear()


def constant(key: str, render: Callable[[], str]) -> Markup:
    """A part that only changes with the code (a form's fields without their
    token): rendered once per process."""
    consts = current_app.extensions.setdefault("nixie_constant_parts", {})
    html = consts.get(key)
    if html is None:
        html = consts[key] = Markup(render())
    return html
