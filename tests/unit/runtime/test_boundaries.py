"""Adapters reach the runtime only through its ports (``runtime/ports.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "expertline"
# Where the runtime is built: the runtime's own package and the composition root. Benchmarks
# build a runtime of their own too.
ALLOWED = ("runtime/", "node.py", "bench/")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_adapter_imports_the_runtime_service() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {name}"
        for path in _modules()
        if not str(path.relative_to(SRC)).startswith(ALLOWED)
        for line, name in _imports(path)
        if name == "expertline.runtime.service" or name.startswith("expertline.runtime.service.")
    ]
    assert offenders == []


@pytest.mark.parametrize("part", ["presence", "sip", "web", "reporting"])
def test_adapters_read_no_private_attribute_of_the_runtime(part: str) -> None:
    offenders = []
    for path in sorted((SRC / part).rglob("*.py")):
        text = path.read_text()
        for bad in ('"_doc"', "._doc", "runtime._", "port._", "service._"):
            if bad in text:
                offenders.append(f"{path.relative_to(SRC)}: {bad}")
    assert offenders == []


def test_the_check_sees_an_offender(tmp_path: Path) -> None:
    """The import check reads imports as Python does, not text."""
    module = tmp_path / "adapter.py"
    module.write_text("from expertline.runtime.service import RuntimeService\n")
    assert (1, "expertline.runtime.service.RuntimeService") in _imports(module)
