"""assert_golden fails on a rendered text that differs from its golden file, and on a golden
file that is missing (it writes one only when asked with NIXIE_REGEN_GOLDEN=1)."""

from __future__ import annotations

import pytest

from tests import golden


def test_differs_missing_and_regenerated(tmp_path, monkeypatch):
    monkeypatch.setattr(golden, "GOLDEN", tmp_path)
    monkeypatch.delenv("NIXIE_REGEN_GOLDEN", raising=False)
    with pytest.raises(AssertionError, match="missing"):
        golden.assert_golden("new.ipxe", "#!ipxe\n")
    assert not (tmp_path / "new.ipxe").exists()
    monkeypatch.setenv("NIXIE_REGEN_GOLDEN", "1")
    golden.assert_golden("new.ipxe", "#!ipxe\n")
    monkeypatch.delenv("NIXIE_REGEN_GOLDEN")
    golden.assert_golden("new.ipxe", "#!ipxe\n")
    with pytest.raises(AssertionError, match="differs"):
        golden.assert_golden("new.ipxe", "#!ipxe\nexit\n")
