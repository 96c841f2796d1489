"""docs/configuration.md is generated from the schema and must not go stale."""

from __future__ import annotations

from pathlib import Path

from expertline.config.docs import DOC_PATH, render
from expertline.config.schema import Expert, MessageSet, Queue

ROOT = Path(__file__).parents[3]


def test_the_reference_page_is_current() -> None:
    assert (ROOT / DOC_PATH).read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m expertline.config.docs`"
    )


def test_every_field_is_documented() -> None:
    page = render()
    for model in (Expert, Queue, MessageSet):
        for name in model.model_fields:
            assert f"| `{name}` |" in page, name
