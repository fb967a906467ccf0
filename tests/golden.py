"""Golden files: a rendered text compared whole with `tests/data/golden/NAME`.
`NIXIE_REGEN_GOLDEN=1` writes them (a missing one too); the diff then shows what changed."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "golden"


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NIXIE_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} is missing (NIXIE_REGEN_GOLDEN=1 writes it)"
    assert text == path.read_text(), f"{name} differs from {path} (NIXIE_REGEN_GOLDEN=1 to accept)"
