"""Reading DHCP leases (the DHCP servers write them through their lease stores).

DHCPv4 leases (table `leases`) and DHCPv6 bindings (table `leases6`) are listed
together, newest expiry first, with one pagination; each row says its `family`
(4 or 6). A v6 row's `ip` is its IPv6 address and it carries the client's `duid`
and `iaid`; a v4 row carries its `client_id`. The web UI, the API and the CLI all
list through here.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.state.db import now

FAMILIES = (4, 6)

_V4 = ("SELECT 4 AS family, l.ip, l.mac, l.client_id, NULL AS duid, NULL AS iaid, l.hostname, "
       "l.state, l.starts, l.expires, l.updated_at FROM leases l")
_V6 = ("SELECT 6 AS family, l.address AS ip, l.mac, NULL AS client_id, l.duid, l.iaid, "
       "l.hostname, l.state, l.starts, l.expires, l.updated_at FROM leases6 l")
_ACTIVE = " WHERE l.state = 'bound' AND l.expires > ?"


def _union(include_expired: bool, family: int | None, t: float) -> tuple[str, list[Any]]:
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    parts, args = [], []
    for fam, sql in ((4, _V4), (6, _V6)):
        if family in (None, fam):
            parts.append(sql if include_expired else sql + _ACTIVE)
            if not include_expired:
                args.append(t)
    return " UNION ALL ".join(parts), args


def list_leases(conn: sqlite3.Connection, *, include_expired: bool = False,
                limit: int | None = None, offset: int = 0, family: int | None = None
                ) -> list[dict[str, Any]]:
    """Leases of both families (or of `family`), with the host bound to each MAC."""
    t = now()
    inner, args = _union(include_expired, family, t)
    sql = (f"SELECT u.*, h.name AS host FROM ({inner}) u LEFT JOIN host_macs m ON m.mac = u.mac "
           "LEFT JOIN hosts h ON h.id = m.host_id ORDER BY u.expires DESC, u.ip")
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    out = []
    for r in conn.execute(sql, args):
        d = dict(r)
        if d["state"] == "bound" and d["expires"] <= t:
            d["state"] = "expired"
        out.append(d)
    return out


def count_leases(conn: sqlite3.Connection, *, include_expired: bool = False,
                 family: int | None = None) -> int:
    inner, args = _union(include_expired, family, now())
    return conn.execute(f"SELECT count(*) FROM ({inner})", args).fetchone()[0]
