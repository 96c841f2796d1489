"""Bad input of any shape gets problems, never an exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expertline.config.validate import check_yaml, validate_document
from expertline.config.yamlio import parse_yaml

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "20s",
            "all",
            "reject",
            "billing >= 50",
            "true",
            "xmpp",
            "proficiency",
            "list",
            "en",
            "q1",
            "alice",
            "sip:1@x",
        ]
    ),
)
keys = st.sampled_from(
    [
        "attributes",
        "experts",
        "queues",
        "entry_points",
        "presence",
        "messages",
        "id",
        "name",
        "type",
        "values",
        "phone",
        "im",
        "select",
        "order",
        "skill",
        "offer_to",
        "on_max_wait",
        "overflow",
        "label",
        "escalate",
        "after",
        "queue",
        "dialed_number",
        "kind",
        "jid",
        "password_env",
        "component",
        "status_map",
        "offer",
        "en",
        "attributes",
        "billing",
        "x",
    ]
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, trees, max_size=6))
def test_any_document_shape_gives_a_document_or_problems(raw: dict[str, Any]) -> None:
    doc, problems = validate_document(raw)
    assert (doc is None) == bool(problems)
    for p in problems:
        assert isinstance(p.path, str) and p.message


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab:-[]{}'\"#&*!|>? \n\t0123456789.,<~%@`")), max_size=60)
)
def test_any_text_gives_data_or_problems(text: str) -> None:
    parse_yaml(text)
    doc, problems = check_yaml(text)
    assert (doc is None) == bool(problems)
