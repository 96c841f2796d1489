"""The values a compiled selection computes with: whole columns at once, with CEL's errors.

A value is either ``Vec`` (int, double or bool data) or ``Strs`` (strings as codes into a small
table). Data has shape (n,) for column-dependent values and () for constants; ``err`` marks rows
where CEL evaluation would produce an error (None: no errors anywhere). The operators here keep
CEL's semantics: ``&&``/``||`` absorb errors, strings compare in code-point order, a ternary
counts only the chosen branch's errors.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class Vec:
    __slots__ = ("data", "err")

    def __init__(self, data: Any, err: Any = None) -> None:
        self.data = data
        self.err = err


class Strs:
    __slots__ = ("codes", "err", "table")

    def __init__(self, codes: Any, table: Sequence[str], err: Any = None) -> None:
        self.codes = codes
        self.table = table
        self.err = err

    def scalar(self) -> str | None:
        return self.table[int(self.codes)] if np.ndim(self.codes) == 0 else None


Value = Vec | Strs
Env = dict[str, Value]


class Frame(Protocol):
    """Columns of attribute values: every expert (bulk) or one expert (incremental)."""

    n: int

    def column(self, name: str) -> np.ndarray: ...

    def strings(self, name: str) -> tuple[np.ndarray, Sequence[str]]: ...

    def list_counts(self, name: str) -> Mapping[str, np.ndarray]: ...

    def list_size(self, name: str) -> np.ndarray: ...


def as_vec(value: Value) -> Vec:
    assert isinstance(value, Vec)
    return value


def err_or(*errs: Any) -> Any:
    out = None
    for e in errs:
        if e is not None:
            out = e if out is None else np.logical_or(out, e)
    return out


def _definite(v: Vec) -> tuple[Any, Any]:
    """(definitely true, definitely false) for a boolean value, errors excluded."""
    if v.err is None:
        return v.data, np.logical_not(v.data)
    ok = np.logical_not(v.err)
    return np.logical_and(v.data, ok), np.logical_and(np.logical_not(v.data), ok)


def cel_and(a: Vec, b: Vec) -> Vec:
    """CEL ``&&``: false if either side is false (even if the other errs), else error, else true."""
    if a.err is None and b.err is None:
        return Vec(np.logical_and(a.data, b.data))
    ta, fa = _definite(a)
    tb, fb = _definite(b)
    err = np.logical_and(err_or(a.err, b.err), np.logical_not(np.logical_or(fa, fb)))
    return Vec(np.logical_and(ta, tb), err)


def cel_or(a: Vec, b: Vec) -> Vec:
    """CEL ``||``: true if either side is true (even if the other errs), else error, else false."""
    if a.err is None and b.err is None:
        return Vec(np.logical_or(a.data, b.data))
    ta, _ = _definite(a)
    tb, _ = _definite(b)
    true = np.logical_or(ta, tb)
    return Vec(true, np.logical_and(err_or(a.err, b.err), np.logical_not(true)))


def str_table(a: Strs, fn: Callable[[str], Any], dtype: Any) -> Any:
    """Apply ``fn`` to each distinct string once, then spread the result over the rows."""
    table = np.fromiter((fn(s) for s in a.table), dtype=dtype, count=len(a.table))
    return table[a.codes]


_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "relation_lt": operator.lt,
    "relation_le": operator.le,
    "relation_gt": operator.gt,
    "relation_ge": operator.ge,
    "relation_eq": operator.eq,
    "relation_ne": operator.ne,
}
_NP_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "relation_lt": np.less,
    "relation_le": np.less_equal,
    "relation_gt": np.greater,
    "relation_ge": np.greater_equal,
    "relation_eq": np.equal,
    "relation_ne": np.not_equal,
}
_FLIP = {
    "relation_lt": "relation_gt",
    "relation_le": "relation_ge",
    "relation_gt": "relation_lt",
    "relation_ge": "relation_le",
    "relation_eq": "relation_eq",
    "relation_ne": "relation_ne",
}


def _cmp_strs(op: str, a: Strs, b: Strs) -> Vec:
    """String comparison in code-point order (= CEL's UTF-8 byte order)."""
    err = err_or(a.err, b.err)
    fn = _CMP[op]
    s = b.scalar()
    if s is not None:
        return Vec(str_table(a, lambda x: fn(x, s), bool), err)
    s = a.scalar()
    if s is not None:
        flipped = _CMP[_FLIP[op]]
        return Vec(str_table(b, lambda x: flipped(x, s), bool), err)
    # Two columns: rank every distinct string of both tables, compare ranks.
    order = {v: i for i, v in enumerate(sorted(set(a.table) | set(b.table)))}
    ra = np.fromiter((order[v] for v in a.table), np.int64, len(a.table))[a.codes]
    rb = np.fromiter((order[v] for v in b.table), np.int64, len(b.table))[b.codes]
    return Vec(_NP_CMP[op](ra, rb), err)


def compare(op: str, a: Value, b: Value) -> Vec:
    if isinstance(a, Strs) and isinstance(b, Strs):
        return _cmp_strs(op, a, b)
    assert isinstance(a, Vec) and isinstance(b, Vec)
    return Vec(_NP_CMP[op](a.data, b.data), err_or(a.err, b.err))


def where(cond: Vec, a: Value, b: Value) -> Value:
    """CEL ``c ? a : b``: only the chosen branch's errors count."""
    c = cond.data
    err = err_or(
        cond.err,
        None if a.err is None else np.logical_and(c, a.err),
        None if b.err is None else np.logical_and(np.logical_not(c), b.err),
    )
    if isinstance(a, Strs) and isinstance(b, Strs):
        table = [*a.table, *b.table]
        codes = np.where(c, a.codes, np.asarray(b.codes) + len(a.table))
        return Strs(codes, table, err)
    assert isinstance(a, Vec) and isinstance(b, Vec)
    return Vec(np.where(c, a.data, b.data), err)
