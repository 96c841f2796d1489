"""YAML reading and writing: strict keys, YAML 1.2 scalars, canonical output that reads back."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from expertline.config.yamlio import dump_yaml, format_path, parse_yaml


def test_duplicate_keys_are_problems_with_path_and_line() -> None:
    data, problems = parse_yaml("queues:\n  - id: a\n    name: A\n    name: B\n")
    assert [str(p) for p in problems] == [
        "queues[0].name: duplicate key at line 4 (first at line 3)"
    ]
    assert data == {"queues": [{"id": "a", "name": "A"}]}


def test_yaml_1_2_scalars() -> None:
    data, problems = parse_yaml(
        "a: [yes, no, on, off, true, False, 0o17, 0x1F, 1.5, 2026-01-01, '3', ~, 1_000, !!str 7]"
    )
    assert not problems
    assert data["a"] == [
        "yes",
        "no",
        "on",
        "off",
        True,
        False,
        15,
        31,
        1.5,
        "2026-01-01",
        "3",
        None,
        "1_000",
        "7",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1\n", "not valid YAML: line 2, column 1"),
        ("", "the document is empty"),
        ("a: 1\n---\nb: 2\n", "only one YAML document is allowed"),
        ("<<: {a: 1}\n", "merge keys (<<) are not supported"),
        ("? [a]\n: 1\n", "mapping keys must be plain text"),
        ("a: !custom 1\n", "YAML tag !custom is not supported"),
        ("a: *nowhere\n", "unknown alias *nowhere"),
    ],
)
def test_rejected_yaml(text: str, message: str) -> None:
    _, problems = parse_yaml(text)
    assert problems, text
    assert message in str(problems[0])


def test_anchors_and_aliases_are_followed() -> None:
    data, problems = parse_yaml("base: &b {x: 1}\ncopy: *b\n")
    assert not problems
    assert data == {"base": {"x": 1}, "copy": {"x": 1}}


def test_json_input_takes_the_fast_path_and_still_reports_duplicates() -> None:
    assert parse_yaml('{"a": [1, "x"]}') == ({"a": [1, "x"]}, [])
    _, problems = parse_yaml('{"a": 1, "a": 2}')
    assert [p.path for p in problems] == ["a"]


def test_format_path() -> None:
    assert format_path(["queues", 2, "select"]) == "queues[2].select"
    assert format_path(["messages", "pt-BR", "offer"]) == "messages.pt-BR.offer"
    assert format_path(["experts", 0, "attributes", "a b"]) == "experts[0].attributes['a b']"


TRICKY = [
    "yes",
    "no",
    "on",
    "3",
    "",
    " lead",
    "trail ",
    "1:30",
    "2026-01-01",
    "a\nb\n",
    "+1800",
    "0o17",
    "null",
    "~",
    "#x",
    "a: b",
    "- x",
    "émile",
    "tab\there",
    "x #y",
    "'q'",
    '"q"',
    "{a}",
    "[a]",
    "&a",
    "*a",
    "!a",
    "%a",
    "@a",
    "`a",
    "|",
    ">",
    "?",
    "-",
    ".inf",
    ".nan",
    "1e3",
    "1.0",
    "=",
    "<<",
    "a,b",
    "Offer #{code}: {queue}",
    "\x7f",
    "\x85",
    "\u2028",
]


@pytest.mark.parametrize("text", TRICKY)
def test_strings_that_look_like_something_else_survive(text: str) -> None:
    out = dump_yaml({"k": [text]})
    assert parse_yaml(out) == ({"k": [text]}, [])
    # Other YAML (1.1) readers read the same thing.
    assert yaml.safe_load(out) == {"k": [text]}


def test_numbers_and_specials() -> None:
    data = {"n": [0, -5, 3.0, 2.5, 1e20, 1.5e-7, None, True, False, [], {}]}
    out = dump_yaml(data)
    assert parse_yaml(out) == (data, [])
    assert yaml.safe_load(out) == data
    inf = parse_yaml(dump_yaml({"x": math.inf}))[0]
    assert inf == {"x": math.inf}


scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
keys = st.text(min_size=1, max_size=10)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_dump_then_parse_is_identity(data: dict) -> None:
    text = dump_yaml(data)
    assert parse_yaml(text) == (data, [])
    assert dump_yaml(parse_yaml(text)[0]) == text


def test_locate_finds_the_line_of_a_path_or_its_parent() -> None:
    from expertline.config.yamlio import locate, parse_path

    text = "queues:\n  - id: a\n    name: A\n  - id: b\n    select: x\n"
    assert locate(text, ["queues[1].select", "queues[1].name", "queues[0]", "nowhere.x"]) == {
        "queues[1].select": 5,
        "queues[1].name": 4,
        "queues[0]": 2,
    }
    assert parse_path("experts[0].attributes['a b']") == ("experts", 0, "attributes", "a b")
