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


# The core's own modules (the eligibility package turns the configuration into the core's
# model and lives beside it, not in it).
CORE_PACKAGE = list(ROUTING.glob("*.py"))
# Leaf modules of the product the core may use: the state-machine kit, instants as text, and
# the records it writes.
ALLOWED = ("expertline.routing", "expertline.records", "expertline.machine", "expertline.instants")


def test_the_core_imports_nothing_else_of_the_product() -> None:
    import ast

    outside = []
    for path in CORE_PACKAGE:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("expertline") and not name.startswith(ALLOWED):
                    outside.append(f"{path.name}: {name}")
    assert outside == []
    assert len(CORE_PACKAGE) > 10
