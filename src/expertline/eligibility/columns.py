"""The column store: every expert's attribute values, one numpy column per attribute.

Values are checked as they come in (an ``InvalidInput`` names the expert and attribute, and
nothing changes); absent values take their type's default. ``Columns`` holds every expert for
bulk evaluation, ``RowFrame`` one expert's values in the same shape for incremental updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from expertline.errors import InvalidInput, Problem

PROFICIENCY_RANGE = (0, 100)  # 0 = the default of an expert who does not list the skill


def _describe(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, str | int | float) else repr(value)


def _normalize(kind: str, value: Any) -> Any:
    """One attribute value as the columns store it; ValueError says what is wrong."""
    if kind == "proficiency":
        if type(value) is not int or not PROFICIENCY_RANGE[0] <= value <= PROFICIENCY_RANGE[1]:
            raise ValueError(f"expected a proficiency from 1 to 100, got {_describe(value)}")
        return value
    if kind == "number":
        if type(value) not in (int, float):
            raise ValueError(f"expected a number, got {_describe(value)}")
        return float(value)
    if kind == "boolean":
        if type(value) is not bool:
            raise ValueError(f"expected true or false, got {_describe(value)}")
        return value
    if kind == "string":
        if type(value) is not str:
            raise ValueError(f"expected text, got {_describe(value)}")
        return value
    if not isinstance(value, list | tuple) or any(type(v) is not str for v in value):
        raise ValueError(f"expected a list of strings, got {_describe(value)}")
    return tuple(value)


_DEFAULTS: dict[str, Any] = {
    "proficiency": 0,
    "number": 0.0,
    "boolean": False,
    "string": "",
    "list": (),
}
_ALLOWED_TYPES: dict[str, set[type]] = {
    "proficiency": {int},
    "number": {int, float},
    "boolean": {bool},
}
_DTYPES: dict[str, Any] = {"proficiency": np.int64, "number": np.float64, "boolean": np.bool_}


class Columns:
    """Every expert's attribute values, one numpy column per attribute (per member for lists).

    Rows are reused after removals; ``alive`` says which rows hold an expert.
    """

    def __init__(self, attributes: Mapping[str, str]) -> None:
        self.attributes = dict(attributes)
        self.n = 0  # rows in use (high-water mark)
        self.capacity = 0
        self.ids = np.empty(0, dtype=object)
        self.alive = np.zeros(0, dtype=bool)
        self.row: dict[str, int] = {}
        self.free: list[int] = []
        self.cols: dict[str, np.ndarray] = {}
        self.codes: dict[str, np.ndarray] = {}
        self.tables: dict[str, list[str]] = {}
        self.table_index: dict[str, dict[str, int]] = {}
        self.counts: dict[str, dict[str, np.ndarray]] = {}
        self.sizes: dict[str, np.ndarray] = {}
        self.raw_lists: dict[str, list[tuple[str, ...]]] = {}
        for name, kind in self.attributes.items():
            if kind in _DTYPES:
                self.cols[name] = np.zeros(0, dtype=_DTYPES[kind])
            elif kind == "string":
                self.codes[name] = np.zeros(0, dtype=np.int32)
                self.tables[name] = [""]
                self.table_index[name] = {"": 0}
            elif kind == "list":
                self.counts[name] = {}
                self.sizes[name] = np.zeros(0, dtype=np.int64)
                self.raw_lists[name] = []
            else:
                raise ValueError(f"attribute {name!r} has unknown type {kind!r}")

    # Frame protocol over the rows in use.
    def column(self, name: str) -> np.ndarray:
        return self.cols[name][: self.n]

    def strings(self, name: str) -> tuple[np.ndarray, Sequence[str]]:
        return self.codes[name][: self.n], self.tables[name]

    def list_counts(self, name: str) -> Mapping[str, np.ndarray]:
        return {m: c[: self.n] for m, c in self.counts[name].items()}

    def list_size(self, name: str) -> np.ndarray:
        return self.sizes[name][: self.n]

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return

        def resized(a: np.ndarray) -> np.ndarray:
            out = np.zeros(capacity, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.ids = resized(self.ids)
        self.alive = resized(self.alive)
        for d in (self.cols, self.codes, self.sizes):
            for k, v in d.items():
                d[k] = resized(v)
        for members in self.counts.values():
            for m, v in members.items():
                members[m] = resized(v)
        for raws in self.raw_lists.values():
            raws.extend([()] * (capacity - len(raws)))
        self.capacity = capacity

    def load(self, experts: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Fill empty columns from many experts at once.

        One pass collects the values experts actually list (attributes are sparse: an expert
        lists a few of many skills); then each column is written and checked with numpy.
        Columns start at the defaults, so absent values cost nothing.
        """
        assert self.n == 0
        n = len(experts)
        ids = [eid for eid, _ in experts]
        if len(set(ids)) != n:
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise _bad(dup, "", "duplicate expert id")
        flat_rows, flat_values, order, bounds = self._by_attribute(experts)
        self.grow(max(n, 16))
        self.ids[:n] = ids
        self.alive[:n] = True
        self.row = {eid: i for i, eid in enumerate(ids)}
        self.n = n
        for i, (name, kind) in enumerate(self.attributes.items()):
            pick = order[bounds[i] : bounds[i + 1]]
            if not len(pick):
                continue
            rows = flat_rows[pick]
            values = flat_values[pick].tolist()
            if kind in _DTYPES:
                self._load_scalars(ids, rows, name, kind, values)
            elif kind == "string":
                self._load_strings(ids, rows, name, values)
            else:
                self._load_lists(ids, rows, name, values)

    def _by_attribute(self, experts: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[Any, ...]:
        """Every (expert row, value) the experts list, grouped by attribute: rows and values
        in attribute order (``order``), attribute i's at ``order[bounds[i]:bounds[i + 1]]``.

        List comprehensions and one argsort instead of a Python loop per value.
        """
        n = len(experts)
        rows_attrs = [attrs for _, attrs in experts]
        keys = [k for a in rows_attrs for k in a]
        code_of = {name: i for i, name in enumerate(self.attributes)}
        try:
            key_codes = np.fromiter(map(code_of.__getitem__, keys), np.intp, len(keys))
        except KeyError:
            eid, attrs = next((e, a) for e, a in experts if not a.keys() <= code_of.keys())
            raise _bad(eid, sorted(attrs.keys() - code_of.keys())[0], "unknown attribute") from None
        flat_values = np.fromiter(
            (v for a in rows_attrs for v in a.values()), dtype=object, count=len(keys)
        )
        flat_rows = np.repeat(np.arange(n), np.fromiter(map(len, rows_attrs), np.intp, n))
        order = np.argsort(key_codes, kind="stable")
        bounds = np.searchsorted(key_codes[order], np.arange(len(code_of) + 1))
        return flat_rows, flat_values, order, bounds

    def _load_scalars(
        self, ids: list[str], rows: np.ndarray, name: str, kind: str, values: list[Any]
    ) -> None:
        allowed: set[type] = _ALLOWED_TYPES[kind]
        if not set(map(type, values)) <= allowed:
            self._raise_first(ids, rows, name, kind, values)
        arr = np.array(values, dtype=_DTYPES[kind])
        if kind == "proficiency" and (
            arr.min() < PROFICIENCY_RANGE[0] or arr.max() > PROFICIENCY_RANGE[1]
        ):
            self._raise_first(ids, rows, name, kind, values)
        self.cols[name][rows] = arr

    def _load_strings(self, ids: list[str], rows: np.ndarray, name: str, values: list[Any]) -> None:
        if not set(map(type, values)) <= {str}:
            self._raise_first(ids, rows, name, "string", values)
        index = self.table_index[name]
        codes = [index.setdefault(v, len(index)) for v in values]
        self.tables[name] = list(index)
        self.codes[name][rows] = codes

    def _load_lists(self, ids: list[str], rows: np.ndarray, name: str, values: list[Any]) -> None:
        """List members are counted per row, one uint8 column per distinct member."""
        members = (
            [m for v in values for m in v]
            if all(type(v) in (list, tuple) for v in values)
            else None
        )
        if members is None or not set(map(type, members)) <= {str}:
            self._raise_first(ids, rows, name, "list", values)
            return  # pragma: no cover - _raise_first always raises here
        raws = self.raw_lists[name]
        for r, v in zip(rows.tolist(), values, strict=True):
            raws[r] = tuple(v)
        lengths = np.fromiter(map(len, values), np.intp, len(values))
        self.sizes[name][rows] = lengths
        member_index: dict[str, int] = {}
        member_codes = np.fromiter(
            (member_index.setdefault(m, len(member_index)) for m in members),
            np.intp,
            len(members),
        )
        member_rows = np.repeat(rows, lengths)
        n = self.n
        for m, code in member_index.items():
            col = np.zeros(self.capacity, dtype=np.uint8)
            col[:n] = np.bincount(member_rows[member_codes == code], minlength=n)
            self.counts[name][m] = col

    def _raise_first(
        self, ids: list[str], where: np.ndarray, name: str, kind: str, values: list[Any]
    ) -> None:
        for r, v in zip(where.tolist(), values, strict=True):
            try:
                _normalize(kind, v)
            except ValueError as exc:
                raise _bad(ids[r], name, str(exc)) from None
        raise AssertionError("no bad value found")  # pragma: no cover

    def normalize_row(self, expert_id: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared attribute's value for one expert, defaults filled in, checked."""
        out = {}
        for name in attrs:
            if name not in self.attributes:
                raise _bad(expert_id, name, "unknown attribute")
        for name, kind in self.attributes.items():
            try:
                out[name] = _normalize(kind, attrs[name]) if name in attrs else _DEFAULTS[kind]
            except ValueError as exc:
                raise _bad(expert_id, name, str(exc)) from None
        return out

    def key_column(self, name: str) -> np.ndarray:
        """An int64 per row that is equal exactly when the attribute's values are equal."""
        kind = self.attributes[name]
        if kind == "number":
            return self.cols[name][: self.n].view(np.int64)
        if kind in _DTYPES:
            return self.cols[name][: self.n].astype(np.int64)
        if kind == "string":
            return self.codes[name][: self.n].astype(np.int64)
        index: dict[tuple[str, ...], int] = {}
        raws = self.raw_lists[name]
        return np.fromiter(
            (index.setdefault(raws[r], len(index)) for r in range(self.n)), np.int64, self.n
        )

    def read_row(self, r: int, names: Iterable[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.attributes if names is None else names:
            kind = self.attributes[name]
            if kind in _DTYPES:
                out[name] = self.cols[name][r].item()
            elif kind == "string":
                out[name] = self.tables[name][int(self.codes[name][r])]
            else:
                out[name] = self.raw_lists[name][r]
        return out

    def write_row(self, r: int, values: Mapping[str, Any]) -> None:
        for name, kind in self.attributes.items():
            v = values[name]
            if kind in _DTYPES:
                self.cols[name][r] = v
            elif kind == "string":
                index = self.table_index[name]
                code = index.get(v)
                if code is None:
                    code = index[v] = len(self.tables[name])
                    self.tables[name].append(v)
                self.codes[name][r] = code
            else:
                members = self.counts[name]
                for m in self.raw_lists[name][r]:
                    members[m][r] = 0
                for m in v:
                    col = members.get(m)
                    if col is None:
                        col = members[m] = np.zeros(self.capacity, dtype=np.uint8)
                    col[r] += 1
                self.raw_lists[name][r] = v
                self.sizes[name][r] = len(v)

    def allocate(self, expert_id: str) -> int:
        if self.free:
            r = self.free.pop()
        else:
            if self.n >= self.capacity:
                self.grow(max(16, self.capacity * 2))
            r = self.n
            self.n += 1
        self.ids[r] = expert_id
        self.alive[r] = True
        self.row[expert_id] = r
        return r

    def release(self, expert_id: str) -> int:
        r = self.row.pop(expert_id)
        self.write_row(r, {name: _DEFAULTS[k] for name, k in self.attributes.items()})
        self.ids[r] = None
        self.alive[r] = False
        self.free.append(r)
        return r


class RowFrame:
    """One expert's values in the shape of ``Columns`` (arrays of length 1)."""

    n = 1

    def __init__(self, attributes: Mapping[str, str], values: Mapping[str, Any]) -> None:
        self.attributes = attributes
        self.values = values

    def column(self, name: str) -> np.ndarray:
        return np.array([self.values[name]], dtype=_DTYPES[self.attributes[name]])

    def strings(self, name: str) -> tuple[np.ndarray, Sequence[str]]:
        return np.zeros(1, dtype=np.int32), [self.values[name]]

    def list_counts(self, name: str) -> Mapping[str, np.ndarray]:
        counts: dict[str, np.ndarray] = {}
        for m in self.values[name]:
            counts[m] = counts.get(m, np.zeros(1, dtype=np.uint8)) + np.uint8(1)
        return counts

    def list_size(self, name: str) -> np.ndarray:
        return np.array([len(self.values[name])], dtype=np.int64)


def _bad(expert_id: str, name: str, message: str) -> InvalidInput:
    path = f"experts[{expert_id}].attributes.{name}" if name else f"experts[{expert_id}]"
    return InvalidInput(f"bad attributes for expert {expert_id!r}", [Problem(path, message)])
