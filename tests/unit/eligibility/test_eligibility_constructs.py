"""Each construct of the vectorized subset, the fallback path, and bad input."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cel_expr_python import cel

from expertline.config.cel import CEL_TYPES, SelectionCompiler
from expertline.eligibility import EligibilityIndex, compile_selection
from expertline.eligibility import index as eligibility
from expertline.errors import InvalidInput
from support.eligibility import SKILL_ATTRS

ATTRS = SKILL_ATTRS
KINDS = {a.name: a.type for a in ATTRS}
EXPERTS: dict[str, dict[str, Any]] = {
    "alice": {
        "billing": 80,
        "tech": 10,
        "rating": 4.5,
        "certified": True,
        "region": "emea",
        "language": ["en", "es"],
    },
    "bob": {"billing": 30, "rating": 2.0, "region": "amer", "language": ["en"]},
    "carol": {"tech": 95, "rating": -1.5, "certified": True, "region": "apac", "language": ["fr"]},
    "dave": {},  # every attribute at its default: 0, 0.0, false, "", []
    "erin": {
        "billing": 50,
        "tech": 50,
        "rating": 0.0,
        "region": "emea-north",
        "language": ["es", "fr", "en"],
    },
}

CASES = [
    # comparisons on ints, doubles, strings, bools
    ("billing >= 50", {"alice", "erin"}),
    ("billing == 0", {"carol", "dave"}),
    ("billing != 30 && billing < 60", {"carol", "dave", "erin"}),
    ("rating > 0.0", {"alice", "bob"}),
    ("rating <= 0.0", {"carol", "dave", "erin"}),
    ("region == 'emea'", {"alice"}),
    ("region < 'b'", {"bob", "carol", "dave"}),
    ("region >= 'emea'", {"alice", "erin"}),
    ("region == ''", {"dave"}),
    ("certified", {"alice", "carol"}),
    ("!certified", {"bob", "dave", "erin"}),
    ("certified == false", {"bob", "dave", "erin"}),
    ("certified > false", {"alice", "carol"}),
    # logic and parentheses
    ("billing > 40 || tech > 40", {"alice", "carol", "erin"}),
    ("!(billing > 40 || tech > 40)", {"bob", "dave"}),
    ("(billing > 40 || certified) && rating > 1.0", {"alice"}),
    # ternary
    ("certified ? tech > 50 : billing > 20", {"bob", "carol", "erin"}),
    ("(certified ? region : 'x') == 'apac'", {"carol"}),
    # lists: membership, size, macros
    ("'es' in language", {"alice", "erin"}),
    ("'de' in language", set()),
    ("region in ['emea', 'apac']", {"alice", "carol"}),
    ("billing in [30, 50]", {"bob", "erin"}),
    ("rating in [2.0, -1.5]", {"bob", "carol"}),
    ("size(language) >= 2", {"alice", "erin"}),
    ("language.size() == 0", {"dave"}),
    ("language.exists(l, l == 'fr')", {"carol", "erin"}),
    ("language.exists(l, l in ['fr', 'es'])", {"alice", "carol", "erin"}),
    ("language.all(l, l != 'en')", {"carol", "dave"}),
    ("language.exists_one(l, l.startsWith('e'))", {"bob"}),
    ("language.exists(l, l == region)", set()),
    ("language.exists(region, region == 'fr')", {"carol", "erin"}),  # the variable shadows
    ("region in language", set()),
    # strings
    ("region.startsWith('emea')", {"alice", "erin"}),
    ("region.endsWith('ac')", {"carol"}),
    ("region.contains('-')", {"erin"}),
    ("size(region) == 4", {"alice", "amer" and "bob", "carol"}),
    ("region + '!' == 'emea!'", {"alice"}),
    # arithmetic
    ("billing + tech >= 100", {"erin"}),
    ("billing - tech > 0", {"alice", "bob"}),
    ("billing * 2 > 100", {"alice"}),
    ("billing / 20 == 2", {"erin"}),  # 50 / 20 = 2: integer division truncates
    ("-7 / 2 == -3 && -7 % 3 == -1 && billing % 7 == 3", {"alice"}),  # C semantics
    ("rating * 2.0 - 1.0 > 2.0", {"alice", "bob"}),
    ("double(billing) / 100.0 >= 0.5", {"alice", "erin"}),
    ("-rating > 1.0", {"carol"}),
    ("rating / 0.0 > 0.0", {"alice", "bob"}),  # IEEE: +inf, no error
    # errors: division by zero fails the expert, unless && / || absorb it
    ("100 / billing > 1", {"bob", "erin"}),
    ("100 / billing > 1 || billing == 0", {"bob", "carol", "dave", "erin"}),
    ("billing == 0 || 100 / billing > 1", {"bob", "carol", "dave", "erin"}),
    ("billing != 0 && 100 / billing > 1", {"bob", "erin"}),
    ("!(100 / billing > 1)", {"alice"}),
    ("billing % tech == 0", {"alice", "carol", "erin"}),
    ("(billing == 0 ? 1 : 100 / billing) > 1", {"bob", "erin"}),
    ("(billing == 0 ? 1 : 100 / billing) == 1", {"alice", "carol", "dave"}),
    ("true", {"alice", "bob", "carol", "dave", "erin"}),
    ("false", set()),
]


def cel_verdict(text: str, values: dict[str, Any]) -> bool:
    env = cel.NewEnv(variables={a.name: CEL_TYPES[a.type] for a in ATTRS})
    defaults = {"proficiency": 0, "number": 0.0, "boolean": False, "string": "", "list": []}
    data = {a.name: values.get(a.name, defaults[a.type]) for a in ATTRS}
    return env.compile(text).eval(data=data).value() is True


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_construct(text: str, expected: set[str]) -> None:
    compiled = compile_selection(text, KINDS, SelectionCompiler(ATTRS))
    assert compiled.vectorized, compiled.reason
    # The expectation is CEL's, checked here so a wrong table entry cannot hide a bug.
    assert {e for e, v in EXPERTS.items() if cel_verdict(text, v)} == expected
    index = EligibilityIndex(ATTRS, EXPERTS.items(), [("q", [text])])
    assert index.matches("q") == (frozenset(expected),)
    assert not index.fallback_queues()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("region.matches('^e')", "method matches"),
        ("[1, 2].exists(x, x == billing)", "exists over lits"),
        ("int(rating) >= 2", "function int"),
        ("billing * 9223372036854775807 > 0", "overflow"),
        ("dyn(billing) > 50 || certified", "function dyn"),
        ("string(billing) == '80'", "function string"),
        ("language == ['en']", "comparison of list"),
        ("region == 'a\\u00e9'", "escapes"),
    ],
)
def test_fallback_is_exact_and_logged(
    text: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected = frozenset(e for e, v in EXPERTS.items() if cel_verdict(text, v))
    with caplog.at_level(logging.WARNING, logger="expertline.eligibility"):
        index = EligibilityIndex(
            ATTRS, EXPERTS.items(), [("slow", [text]), ("fast", ["certified"])]
        )
    assert index.matches("slow") == (expected,)
    fallback = index.fallback_queues()
    assert set(fallback) == {"slow"}
    assert reason in fallback["slow"]
    assert any("slow" in r.getMessage() and "per expert" in r.getMessage() for r in caplog.records)
    # Updates on the fallback path agree with CEL too.
    index.update_expert("dave", {"billing": 99, "region": "emea", "rating": 2.5})
    assert ("dave" in index.matches("slow")[0]) == cel_verdict(
        text, {"billing": 99, "region": "emea", "rating": 2.5}
    )


def test_fallback_evaluates_once_per_distinct_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Experts sharing the values a fallback selection reads share one CEL evaluation."""
    calls: list[Any] = []
    original = eligibility._cel_match
    monkeypatch.setattr(eligibility, "_cel_match", lambda p, d: calls.append(d) or original(p, d))
    experts = [
        (f"e{i}", {"billing": 1 + i % 3, "region": ["emea", "amer"][i % 2]}) for i in range(600)
    ]
    index = EligibilityIndex(ATTRS, experts, [("q", ["region.matches('^e') && billing >= 2"])])
    expected = {eid for eid, v in experts if v["region"] == "emea" and v["billing"] >= 2}
    assert index.matches("q") == (frozenset(expected),)
    assert len(calls) == 6  # billing 1..3 x two regions; other attributes are not read
    assert all(set(data) == {"billing", "region"} for data in calls)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("billing > 2.0", "no matching overload"),
        ("billing +", "column"),
        ("nosuch > 1", "undeclared reference"),
        ("billing", "must be boolean"),
    ],
)
def test_bad_selection_is_rejected_and_changes_nothing(text: str, problem: str) -> None:
    index = EligibilityIndex(ATTRS, EXPERTS.items(), [("q", ["certified"])])
    with pytest.raises(InvalidInput) as caught:
        index.set_queue("q", ["billing > 10", text])
    assert caught.value.details[0].path == "queues[q].escalate[0].select"
    assert problem in caught.value.details[0].message
    assert index.selections("q") == ("certified",)
    assert index.matches("q") == (frozenset({"alice", "carol"}),)
    with pytest.raises(InvalidInput):
        EligibilityIndex(ATTRS, EXPERTS.items(), [("q", [text])])


@pytest.mark.parametrize(
    ("attrs", "path", "message"),
    [
        ({"billing": 101}, "attributes.billing", "proficiency"),
        ({"billing": True}, "attributes.billing", "proficiency"),
        ({"billing": "80"}, "attributes.billing", "proficiency"),
        ({"rating": "high"}, "attributes.rating", "number"),
        ({"certified": 1}, "attributes.certified", "true or false"),
        ({"region": 5}, "attributes.region", "text"),
        ({"language": "en"}, "attributes.language", "list"),
        ({"language": ["en", 3]}, "attributes.language", "list"),
        ({"color": "red"}, "attributes.color", "unknown attribute"),
    ],
)
def test_bad_attribute_values_are_rejected_and_change_nothing(
    attrs: dict[str, Any], path: str, message: str
) -> None:
    index = EligibilityIndex(ATTRS, EXPERTS.items(), [("q", ["billing >= 50"])])
    with pytest.raises(InvalidInput) as caught:
        index.update_expert("alice", attrs)
    assert caught.value.details[0].path == f"experts[alice].{path}"
    assert message in caught.value.details[0].message
    assert index.matches("q") == (frozenset({"alice", "erin"}),)
    with pytest.raises(InvalidInput) as caught:
        EligibilityIndex(ATTRS, [*EXPERTS.items(), ("zed", attrs)], [("q", ["billing >= 50"])])
    assert caught.value.details[0].path == f"experts[zed].{path}"
