"""The demo's path as a test: real digits, real torch training, the three checks plus the
missing-data run (fewer epochs than `make demo`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.demo import run_demo


def test_demo_path_passes_every_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    failed = run_demo(tmp_path, epochs=8)
    out = capsys.readouterr().out
    assert failed == [], out
    for check in ("1. provenance", "2. structured metrics", "3. canonical results.json",
                  "4. missing data fails loudly"):
        assert f"[PASS] {check}" in out
    assert "verdict keep" in out or "verdict discard" in out
