"""The one table of limits: what it refuses, that the columns follow it, that the docs show it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from expertline import limits
from expertline.db import tables
from expertline.limits import TextLimit, attribute_problems, request_problems, text_problem

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("+15551234567", None),
        ("tab\tnewline\ncr\r", None),
        ("", "must not be empty"),
        ("x" * 21, "is 21 characters; at most 20 are allowed"),
        ("a\x00b", "contains a control character (NUL or another below U+0020)"),
        ("\x1b[31m", "contains a control character (NUL or another below U+0020)"),
        ("\ud800", "contains a lone surrogate (not valid Unicode)"),
    ],
)
def test_text_within_its_limit(value: str, problem: str | None) -> None:
    assert text_problem(value, TextLimit(20)) == problem


def test_a_problem_never_echoes_the_value() -> None:
    secret = "s3cr3t" * 100
    assert "s3cr3t" not in (text_problem(secret, limits.CALLER) or "")
    problems = attribute_problems({"bad\x00name": 1, "ok": secret})
    assert [p.path for p in problems] == ["attributes[0]", "attributes.ok"]
    assert all("s3cr3t" not in p.message and "\x00" not in p.message for p in problems)


def test_attribute_values_are_finite_bounded_and_plain() -> None:
    attributes = {
        "nan": math.nan,
        "inf": -math.inf,
        "big": 2**64,
        "ok_int": 2**63 - 1,
        "ok_float": 1.5,
        "flag": True,
        "list": ["a", 1, "b\x00"],
        "nested": {"a": 1},
        "none": None,
    }
    problems = {p.path: p.message for p in attribute_problems(attributes)}
    assert problems == {
        "attributes.nan": "must be a finite number (not NaN or Infinity)",
        "attributes.inf": "must be a finite number (not NaN or Infinity)",
        "attributes.big": "is out of range (at most 64 bits)",
        "attributes.list[1]": "list items must be text",
        "attributes.list[2]": "contains a control character (NUL or another below U+0020)",
        "attributes.nested": "must be text, a number, a boolean or a list of text",
        "attributes.none": "must be text, a number, a boolean or a list of text",
    }
    many = {f"a{i}": i for i in range(limits.MAX_ATTRIBUTES + 1)}
    assert [p.path for p in attribute_problems(many)] == ["attributes"]


def test_request_fields_each_have_their_limit() -> None:
    problems = request_problems(
        {
            "entry_point": "9" * 129,
            "queue": "",
            "caller": "",
            "external_id": None,
            "callback_url": "x",
        }
    )
    assert [(p.path, p.message) for p in problems] == [
        ("entry_point", "is 129 characters; at most 128 are allowed"),
        ("queue", "must not be empty"),
    ]


def test_every_column_holds_what_its_edge_accepts() -> None:
    widths = {
        ("runtime_tasks", "external_id"): limits.EXTERNAL_ID,
        ("tcd", "router_call_key"): limits.EXTERNAL_ID,
        ("tcd", "ani"): limits.CALLER,
        ("rcd", "ani"): limits.CALLER,
        ("tcd", "dialed_number"): limits.DIALED_NUMBER,
        ("rcd", "dialed_number"): limits.DIALED_NUMBER,
        ("runtime_tasks", "queue_id"): limits.ID,
        ("runtime_tasks", "task_id"): limits.TASK_ID,
        ("runtime_tasks", "code"): limits.CODE,
    }
    for (table, column), limit in widths.items():
        length = tables.metadata.tables[table].c[column].type.length
        assert length is not None and length >= limit.max_chars, (table, column)


def test_the_api_docs_show_the_limits_table() -> None:
    text = DOC.read_text()
    assert limits.render_docs(text) == text, (
        "docs/api.md's limits table is stale: run `python -m expertline.limits`"
    )
