"""How `nixie` prints: tables for people, JSON with --json, timestamps in UTC."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Callable
from typing import Any


def timestamp(t: float | None) -> str:
    """`t` (epoch seconds) in UTC, or - for none."""
    if not t:
        return "-"
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str | Callable]]) -> None:
    def cell(row, getter):
        v = getter(row) if callable(getter) else row.get(getter)
        return "-" if v is None or v == "" else str(v)

    table = [[h for h, _ in columns]] + [[cell(r, g) for _, g in columns] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    """`data` as JSON with --json, else what `human` prints."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        human()
