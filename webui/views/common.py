"""Helpers the views share."""

from __future__ import annotations

from flask import flash

from appliance.errors import NixieError

PAGE_SIZE = 50


def attach_error(form, err: NixieError, fields: dict[str, str] | None = None) -> None:
    """Show an appliance error on the form field it names (or on top of the form)."""
    name = getattr(err, "field", None)
    if name:
        name = (fields or {}).get(name, name)
        field = getattr(form, name, None) if hasattr(form, name) else None
        if field is None and hasattr(form, "field_for"):
            field = form.field_for(err.field)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*list(field.errors or []), str(err)]
            return
    flash(str(err), "error")


def page_arg(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 100_000))
    except ValueError:
        return 1
