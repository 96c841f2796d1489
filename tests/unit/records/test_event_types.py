"""The feed's event types are listed once: the runtime writes no other, the docs show them all."""

from __future__ import annotations

import ast
from pathlib import Path

from expertline.records import feed
from expertline.routing.states import FINAL_TASK

SRC = Path(feed.__file__).resolve().parents[1]
DOC = SRC.parents[1] / "docs" / "api.md"


def _written_types() -> set[str]:
    """Every type the routing core and the runtime write to the feed, read from their source:
    ``_emit("x", ...)``, ``Emit(X, ...)``, ``f"task.{t.status}"`` and ``{"type": "x"}`` rows."""
    names = {n: getattr(feed, n) for n in ("TASK_RECORD", "EXPERT_STATE")}
    found: set[str] = set()
    for path in [*(SRC / "routing").glob("*.py"), *(SRC / "runtime").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called not in ("_emit", "Emit"):
                    continue
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    found.add(first.value)
                elif isinstance(first, ast.Name) and first.id == "type_":
                    continue  # _emit passing its argument on
                elif isinstance(first, ast.Name):
                    found.add(names[first.id])
                elif isinstance(first, ast.JoinedStr):  # f"task.{t.status}": a task's end
                    found |= {f"task.{status}" for status in FINAL_TASK}
                else:
                    raise AssertionError(f"{path.name}:{node.lineno}: an event type not read")
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "type"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                        and value.value.startswith(("task.", "offer.", "expert."))
                    ):
                        found.add(value.value)
    return found


def test_every_type_the_runtime_writes_is_listed_and_no_other() -> None:
    written = _written_types()
    assert {"task.moved", "task.escalated", "task.requeued", "task.attempt"} <= written
    assert written == feed.EVENT_NAMES


def test_names_are_unique_and_described() -> None:
    names = [t.name for t in feed.EVENT_TYPES]
    assert len(names) == len(set(names))
    assert all(t.when for t in feed.EVENT_TYPES)


def test_unknown_types_are_named_in_the_order_given() -> None:
    assert feed.unknown_event_types(None) == []
    assert feed.unknown_event_types(["task.moved", "task.status", "nope"]) == [
        "task.status",
        "nope",
    ]


def test_the_api_docs_show_the_event_table() -> None:
    text = DOC.read_text()
    assert feed.render_docs(text) == text, (
        "docs/api.md's event table is stale: run `python -m expertline.records.feed`"
    )
    for name in feed.EVENT_NAMES:
        assert f"| `{name}` |" in text
