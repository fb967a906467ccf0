"""Rendered page parts shared by every viewer for up to a second.

The dashboard body and the hosts table are the same for every admin; rendering
them once a second (per URL) instead of once per request is what keeps many
viewers (a wall screen, twenty admins) cheap. A change made through this app
drops every cached part at once; a change from another process (the CLI, the
DHCP server) shows within `FRESH_SECONDS`. Parts never hold forms, CSRF
tokens or flashed messages.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from flask import current_app
from markupsafe import Markup

FRESH_SECONDS = 1.0
MAX_PARTS = 256
_lock = threading.Lock()


def _parts() -> OrderedDict:
    return current_app.extensions.setdefault("nixie_fragments", OrderedDict())


def cached(key: str, render: Callable[[], str]) -> Markup:
    parts = _parts()
    t = time.monotonic()
    with _lock:
        hit = parts.get(key)
        if hit is not None and t - hit[0] < FRESH_SECONDS:
            return hit[1]
    html = Markup(render())
    with _lock:
        parts[key] = (t, html)
        parts.move_to_end(key)
        while len(parts) > MAX_PARTS:
            parts.popitem(last=False)
    return html


def forget_all() -> None:
    with _lock:
        _parts().clear()
