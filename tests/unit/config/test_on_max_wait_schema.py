"""The hand-written JSON schema of ``on_max_wait`` (what editors and the reference page see)
accepts exactly what the model accepts."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from pydantic import TypeAdapter, ValidationError

from expertline.config.schema import Queue
from expertline.config.schema.queues import OnMaxWait

VALUES: list[Any] = [
    "reject",
    "overflow",
    {"overflow": "billing_2"},
    {"overflow": ""},
    {"label": "+15550100"},
    {"label": "sip:desk@example.com"},
    {"label": "555 0100"},
    {"label": ""},
    {"label": "x" * 256},
    {"label": "1", "overflow": "q"},
    {"other": "q"},
]


def _model_accepts(value: Any) -> bool:
    try:
        TypeAdapter(OnMaxWait).validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_schema_and_model_agree(value: Any) -> None:
    schema = Queue.model_json_schema(mode="validation")["properties"]["on_max_wait"]
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid(value) == _model_accepts(value)
