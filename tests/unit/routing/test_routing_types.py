"""The routing core type-checks under ``mypy --strict`` (it is the part everything builds on)."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROUTING = Path(__file__).resolve().parents[3] / "src" / "expertline" / "routing"
CORE_FILES = [
    "core.py",
    "states.py",
    "live.py",
    "strategies.py",
    "records.py",
    "diagram.py",
    "state.py",
    "timers.py",
    "offers.py",
    "outcomes.py",
    "matching.py",
    "reconcile.py",
    "handlers.py",
]


def test_the_core_passes_mypy_strict(tmp_path: Path) -> None:
    out, err, status = api.run(
        [
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            *(str(ROUTING / name) for name in CORE_FILES),
        ]
    )
    assert status == 0, out + err
