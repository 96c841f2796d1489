"""The vectorized selections agree with cel-expr-python on random expressions and experts."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import pytest
from cel_expr_python import cel
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from expertline.config.cel import CEL_TYPES, SelectionCompiler
from expertline.eligibility import EligibilityIndex, compile_selection
from support.eligibility import Attr

ATTRS = [
    Attr("p1", "proficiency"),
    Attr("p2", "proficiency"),
    Attr("n1", "number"),
    Attr("n2", "number"),
    Attr("b1", "boolean"),
    Attr("s1", "string"),
    Attr("s2", "string"),
    Attr("l1", "list"),
]
KINDS = {a.name: a.type for a in ATTRS}
WORDS = ["", "a", "b", "ab", "ba", "B", "é", "a b", "zz"]
ENV = cel.NewEnv(variables={a.name: CEL_TYPES[a.type] for a in ATTRS})


@lru_cache(maxsize=4096)
def program(text: str) -> Any:
    return ENV.compile(text)


def str_lit(word: str) -> str:
    return f"'{word}'"


def float_lit(x: float) -> str:
    text = repr(float(x))
    if "inf" in text or "nan" in text:
        return "1e308" if x > 0 else "-1e308"
    return text if ("." in text or "e" in text) else text + ".0"


@st.composite
def expr(draw: st.DrawFn, kind: str, depth: int, bound: tuple[str, ...] = ()) -> str:
    """A well-typed CEL expression of ``kind`` (int, double, string, bool)."""
    leaf = depth <= 0 or draw(st.integers(0, 3)) == 0
    if kind == "int":
        if leaf:
            if draw(st.integers(0, 2)):
                return draw(
                    st.sampled_from(["p1", "p2", "p1", "p2", "size(l1)", "size(s1)", "l1.size()"])
                )
            return draw(
                st.one_of(
                    st.integers(-5, 100).map(str),
                    st.sampled_from(["0", "1", "2", "3", "-1", "-3", "50", "9223372036854775807"]),
                )
            )
        form = draw(st.integers(0, 4))
        if form in (0, 4):
            op = draw(st.sampled_from(["+", "-", "*", "/", "%", "/", "%"]))
            return f"({draw(expr('int', depth - 1, bound))} {op} {draw(expr('int', depth - 1, bound))})"
        if form == 1:
            return f"-({draw(expr('int', depth - 1, bound))})"
        if form == 2:
            return f"size({draw(expr('string', depth - 1, bound))})"
        return (
            f"({draw(expr('bool', depth - 1, bound))} ? {draw(expr('int', depth - 1, bound))}"
            f" : {draw(expr('int', depth - 1, bound))})"
        )
    if kind == "double":
        if leaf:
            if draw(st.integers(0, 2)):
                return draw(st.sampled_from(["n1", "n2"]))
            return draw(
                st.one_of(
                    st.sampled_from(["0.0", "-0.0", "1e308", "2.5", "1.5"]),
                    st.floats(-1e6, 1e6, allow_nan=False).map(float_lit),
                )
            )
        form = draw(st.integers(0, 3))
        if form == 0:
            op = draw(st.sampled_from(["+", "-", "*", "/"]))
            return f"({draw(expr('double', depth - 1, bound))} {op} {draw(expr('double', depth - 1, bound))})"
        if form == 1:
            return f"-({draw(expr('double', depth - 1, bound))})"
        if form == 2:
            return f"double({draw(expr('int', depth - 1, bound))})"
        return (
            f"({draw(expr('bool', depth - 1, bound))} ? {draw(expr('double', depth - 1, bound))}"
            f" : {draw(expr('double', depth - 1, bound))})"
        )
    if kind == "string":
        if leaf:
            if draw(st.integers(0, 2)):
                return draw(st.sampled_from(["s1", "s2", *bound, *bound]))
            return str_lit(draw(st.sampled_from(WORDS)))
        form = draw(st.integers(0, 1))
        if form == 0:
            return f"({draw(expr('string', depth - 1, bound))} + {str_lit(draw(st.sampled_from(WORDS)))})"
        return (
            f"({draw(expr('bool', depth - 1, bound))} ? {draw(expr('string', depth - 1, bound))}"
            f" : {draw(expr('string', depth - 1, bound))})"
        )
    assert kind == "bool"
    if leaf:
        form = draw(st.integers(0, 5))
        if form == 0:
            return draw(st.sampled_from(["true", "false", "b1", "!b1"]))
        operand = draw(st.sampled_from(["int", "int", "int", "double", "string"]))
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
        attr = {"int": "p1", "double": "n1", "string": "s1"}[operand]
        lhs = draw(st.one_of(st.just(attr), expr(operand, 1, bound)))
        return f"({lhs} {op} {draw(expr(operand, 0, bound))})"
    form = draw(st.integers(0, 9))
    if form == 0:
        op = draw(st.sampled_from(["&&", "||"]))
        return (
            f"({draw(expr('bool', depth - 1, bound))} {op} {draw(expr('bool', depth - 1, bound))})"
        )
    if form == 1:
        return f"!({draw(expr('bool', depth - 1, bound))})"
    if form in (2, 3):
        operand = draw(st.sampled_from(["int", "double", "string", "bool"]))
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
        return f"({draw(expr(operand, depth - 1, bound))} {op} {draw(expr(operand, depth - 1, bound))})"
    if form == 4:
        return f"({draw(expr('string', depth - 1, bound))} in l1)"
    if form == 5:
        operand = draw(st.sampled_from(["int", "double", "string"]))
        items = draw(st.lists(expr(operand, 0, bound), max_size=3))
        return f"({draw(expr(operand, depth - 1, bound))} in [{', '.join(items)}])"
    if form == 6:
        macro = draw(st.sampled_from(["exists", "all", "exists_one"]))
        var = draw(st.sampled_from(["v", "w", "s1"]))  # s1 shadows the attribute
        body = draw(expr("bool", depth - 1, (*bound, var)))
        return f"l1.{macro}({var}, {body})"
    if form == 7:
        method = draw(st.sampled_from(["startsWith", "endsWith", "contains"]))
        arg = str_lit(draw(st.sampled_from(WORDS)))
        return f"{draw(expr('string', depth - 1, bound))}.{method}({arg})"
    if form == 8:
        return f"({draw(expr('bool', depth - 1, bound))} ? {draw(expr('bool', depth - 1, bound))} : {draw(expr('bool', depth - 1, bound))})"
    return f"({str_lit(draw(st.sampled_from(WORDS)))} in l1)"


numbers = st.one_of(
    st.sampled_from([0.0, -0.0, 1.5, 2.5, math.inf, -math.inf, math.nan]),
    st.floats(-1e6, 1e6, allow_nan=False),
)


@st.composite
def expert(draw: st.DrawFn) -> dict[str, Any]:
    values: dict[str, Any] = {
        "p1": draw(st.integers(1, 100)),
        "p2": draw(st.integers(1, 100)),
        "n1": draw(numbers),
        "n2": draw(numbers),
        "b1": draw(st.booleans()),
        "s1": draw(st.sampled_from(WORDS)),
        "s2": draw(st.sampled_from(WORDS)),
        "l1": draw(st.lists(st.sampled_from(["a", "b", "ab", "é", ""]), max_size=4)),
    }
    # Absent attributes take their defaults (proficiency 0, number 0.0, "", false, []).
    keep = draw(st.sets(st.sampled_from(sorted(values))))
    return {k: v for k, v in values.items() if k in keep}


def cel_verdict(text: str, values: dict[str, Any]) -> bool:
    defaults = {"proficiency": 0, "number": 0.0, "boolean": False, "string": "", "list": []}
    data = {a.name: values.get(a.name, defaults[a.type]) for a in ATTRS}
    data = {k: float(v) if KINDS[k] == "number" else v for k, v in data.items()}
    return program(text).eval(data=data).value() is True


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=expr("bool", 4), experts=st.lists(expert(), min_size=6, max_size=12))
def test_vectorized_equals_cel(text: str, experts: list[dict[str, Any]]) -> None:
    compiled = compile_selection(text, KINDS, SelectionCompiler(ATTRS))
    # The generator stays inside the vectorized subset; only possible overflow falls back.
    assert compiled.vectorized or "overflow" in (compiled.reason or ""), compiled.reason
    event("vectorized" if compiled.vectorized else "fallback: overflow")

    ids = [f"e{i}" for i in range(len(experts))]
    expected = frozenset(i for i, v in zip(ids, experts, strict=True) if cel_verdict(text, v))

    bulk = EligibilityIndex(ATTRS, list(zip(ids, experts, strict=True)), [("q", [text])])
    assert bulk.matches("q") == (expected,), text
    event("mixed verdicts" if 0 < len(expected) < len(ids) else "uniform verdicts")

    # One row at a time (the incremental path) agrees too.
    single = EligibilityIndex(ATTRS, [], [("q", [text])])
    for eid, values in zip(ids, experts, strict=True):
        single.update_expert(eid, values)
    assert single.matches("q") == (expected,), text


def cel_value(text: str, values: dict[str, Any]) -> Any:
    """The value CEL computes for ``text`` over one expert, or None on an error."""
    defaults = {"proficiency": 0, "number": 0.0, "boolean": False, "string": "", "list": []}
    data = {a.name: values.get(a.name, defaults[a.type]) for a in ATTRS}
    data = {k: float(v) if KINDS[k] == "number" else v for k, v in data.items()}
    result = program(text).eval(data=data)
    return None if result.type() == cel.Type.ERROR else result.value()


def literal(kind: str, value: Any) -> str | None:
    if kind == "int":
        return str(value)
    if kind == "double":
        return float_lit(value) if math.isfinite(value) else None
    return str_lit(value)


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    kind=st.sampled_from(["int", "int", "double", "string"]),
    data=st.data(),
    experts=st.lists(expert(), min_size=6, max_size=12),
)
def test_values_and_errors_equal_cel(
    kind: str, data: st.DataObject, experts: list[dict[str, Any]]
) -> None:
    """Probe a random int/double/string expression with selections that separate its values.

    ``E == v`` and ``E < v`` for every value v CEL computes over the experts pin the value of E
    per expert exactly; ``E == E`` combined with ``b1`` both ways round, under ``||``, ``&&``
    and ``!``, pins where it errs and how CEL's logic absorbs errors.
    """
    text = data.draw(expr(kind, 3))
    found = {cel_value(text, v) for v in experts} - {None}
    ok = f"(({text}) == ({text}))"
    probes = [ok, f"{ok} || b1", f"b1 || {ok}", f"!({ok} && b1)", f"!(b1 && {ok})", f"!{ok}"]
    for value in sorted(found, key=repr)[:6]:
        lit = literal(kind, value)
        if lit is not None:
            probes += [f"({text}) == {lit}", f"({text}) < {lit}"]
    ids = [f"e{i}" for i in range(len(experts))]
    index = EligibilityIndex(ATTRS, list(zip(ids, experts, strict=True)), [("q", probes)])
    assert not index.fallback_queues() or "overflow" in index.fallback_queues()["q"]
    for step, probe in enumerate(probes):
        expected = frozenset(i for i, v in zip(ids, experts, strict=True) if cel_verdict(probe, v))
        assert index.matches("q")[step] == expected, probe
