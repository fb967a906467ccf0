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


def done(args: argparse.Namespace, message: str, **data: Any) -> None:
    """What an action verb (add, remove, ...) did: `message` for people; with --json the
    object `{"ok": true, "message": message, **data}`."""
    emit(args, {"ok": True, "message": message, **data}, lambda: print(message))


def error(json_mode: bool, message: str, code: str, field: str | None = None) -> None:
    """A failed verb's message: with --json the document `{"error": message, "code": code}`
    (and `field` when one argument is at fault) on stdout, else `nixie: message` on stderr."""
    if json_mode:
        doc = {"error": message, "code": code, **({"field": field} if field else {})}
        json.dump(doc, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(f"nixie: {message}", file=sys.stderr)


def stream(args: argparse.Namespace) -> Callable[[str], None]:
    """How a verb prints lines as they happen: to stdout, flushed at once; with --json to
    stderr, as stdout carries only the JSON document."""
    out = sys.stderr if getattr(args, "json", False) else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    return say
