"""The routing client's request models refuse what the database cannot store, field by field,
whatever parsed the body (a JSON parser that lets NaN through hands the model a float)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from expertline.runtime.http import AcceptBody, TaskCreate


def _problems(model: Any, body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    return {tuple(e["loc"]): e["msg"] for e in refused.value.errors()}


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_attribute_values_are_refused(number: float) -> None:
    problems = _problems(TaskCreate, {"queue": "q", "attributes": {"score": number}})
    assert problems == {
        ("attributes", "score"): "Value error, must be a finite number (not NaN or Infinity)"
    }


def test_every_text_field_is_bounded_and_free_of_control_characters() -> None:
    body = {
        "entry_point": "9" * 129,
        "caller": "+1555\x00",
        "external_id": "x" * 256,
        "callback_url": "http://cc.test/\x00",
        "attributes": {"note": "a\x1fb", "tags": ["ok", "\ud800"], "n\x00": 1},
    }
    problems = _problems(TaskCreate, body)
    assert set(problems) == {
        ("entry_point",),
        ("caller",),
        ("external_id",),
        ("callback_url",),
        ("attributes", "note"),
        ("attributes", "tags"),
        ("attributes", "n\x00", "[key]"),
    }
    assert "control character" in problems[("caller",)]
    assert "lone surrogate" in problems[("attributes", "tags")]


def test_plain_values_pass_unchanged() -> None:
    body = {
        "queue": "q",
        "caller": "",
        "attributes": {"s": "5", "i": 2**63 - 1, "f": 1.5, "b": True, "l": ["a\tb"]},
    }
    task = TaskCreate.model_validate(body)
    assert task.attributes == body["attributes"]
    assert task.caller == ""


def test_an_accepted_phone_is_text_without_control_characters() -> None:
    assert _problems(AcceptBody, {"phone": "sip:1\x00@pbx.test"})
    assert AcceptBody.model_validate({"phone": "+15551234567"}).phone == "+15551234567"
