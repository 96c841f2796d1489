"""Which experts match each queue's selection: CEL evaluated column-wise, kept up to date.

A queue's ``select`` (and each escalation step's) is a CEL expression over the expert's
attributes. Evaluating it expert by expert with ``cel-expr-python`` costs ~10 µs, so 100,000
experts x 2,000 selections would take half an hour. Instead each selection is parsed with
cel-python's grammar and the common subset (logic, comparisons, arithmetic, ``in``, ``size``,
string prefix/suffix/contains, the ``exists``/``all``/``exists_one`` macros over list
attributes, ternaries) is compiled into numpy operations over one column per attribute:
a selection then costs a few array operations for all experts at once.

Everything else falls back to exact per-expert evaluation with ``cel-expr-python`` (logged,
with the reason). Semantics are CEL's: expressions are type-checked by ``cel-expr-python``
first (so ``int`` never meets ``double``), integer division truncates and fails on zero,
integer overflow is excluded by interval analysis (or the selection falls back), ``&&``/``||``
absorb errors the way CEL does, and an expert for whom a selection errors does not match.

The same compiled forms run on a single row for incremental updates, so one expert changing
costs one row's evaluation of the selections that read the changed attributes, never a
rebuild.
"""

from __future__ import annotations

import logging
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import celpy
import lark
import numpy as np
from celpy.celparser import CELParser

from expertline.config.cel import SelectionCompiler, SelectionError
from expertline.errors import InvalidInput, Problem
from expertline.limits import PROFICIENCY_MAX, PROFICIENCY_MIN, is_proficiency

if TYPE_CHECKING:
    from expertline.config.schema import ConfigDocument

log = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# A proficiency column's values: 0, the default of an expert who does not list the skill, and
# the proficiencies experts list.
PROFICIENCY_RANGE = (0, PROFICIENCY_MAX)
_SIZE_RANGE = (0, 2**31 - 1)


class AttributeDecl(Protocol):
    """What the index needs of an attribute declaration (``config.schema.Attribute`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


# --- parsing -----------------------------------------------------------------------------------


@cache
def _parser() -> lark.Lark:
    """cel-python's CEL grammar and literal handling, without position tracking (2x faster)."""
    grammar = (Path(celpy.__file__).parent / "cel.lark").read_text()
    return lark.Lark(
        grammar,
        parser="lalr",
        start="expr",
        g_regex_flags=re.M,
        lexer_callbacks={"IDENT": CELParser.ambiguous_literals},
        propagate_positions=False,
        maybe_placeholders=False,
        priority="invert",
    )


def warm_up() -> None:
    """Build the parser now (~0.25 s, once per process) rather than inside the first build."""
    _parser()


class Unsupported(Exception):
    """The selection uses something outside the vectorized subset; evaluate it per expert."""


# --- runtime values ----------------------------------------------------------------------------
# A value is either ``_Vec`` (int, double or bool data) or ``_Strs`` (strings as codes into a
# small table). Data has shape (n,) for column-dependent values and () for constants; ``err``
# marks rows where CEL evaluation would produce an error (None: no errors anywhere).


class _Vec:
    __slots__ = ("data", "err")

    def __init__(self, data: Any, err: Any = None) -> None:
        self.data = data
        self.err = err


class _Strs:
    __slots__ = ("codes", "err", "table")

    def __init__(self, codes: Any, table: Sequence[str], err: Any = None) -> None:
        self.codes = codes
        self.table = table
        self.err = err

    def scalar(self) -> str | None:
        return self.table[int(self.codes)] if np.ndim(self.codes) == 0 else None


Value = _Vec | _Strs
Env = dict[str, Value]


class Frame(Protocol):
    """Columns of attribute values: every expert (bulk) or one expert (incremental)."""

    n: int

    def column(self, name: str) -> np.ndarray: ...

    def strings(self, name: str) -> tuple[np.ndarray, Sequence[str]]: ...

    def list_counts(self, name: str) -> Mapping[str, np.ndarray]: ...

    def list_size(self, name: str) -> np.ndarray: ...


def _vec(value: Value) -> _Vec:
    assert isinstance(value, _Vec)
    return value


def _err_or(*errs: Any) -> Any:
    out = None
    for e in errs:
        if e is not None:
            out = e if out is None else np.logical_or(out, e)
    return out


def _definite(v: _Vec) -> tuple[Any, Any]:
    """(definitely true, definitely false) for a boolean value, errors excluded."""
    if v.err is None:
        return v.data, np.logical_not(v.data)
    ok = np.logical_not(v.err)
    return np.logical_and(v.data, ok), np.logical_and(np.logical_not(v.data), ok)


def _and(a: _Vec, b: _Vec) -> _Vec:
    """CEL ``&&``: false if either side is false (even if the other errs), else error, else true."""
    if a.err is None and b.err is None:
        return _Vec(np.logical_and(a.data, b.data))
    ta, fa = _definite(a)
    tb, fb = _definite(b)
    err = np.logical_and(_err_or(a.err, b.err), np.logical_not(np.logical_or(fa, fb)))
    return _Vec(np.logical_and(ta, tb), err)


def _or(a: _Vec, b: _Vec) -> _Vec:
    """CEL ``||``: true if either side is true (even if the other errs), else error, else false."""
    if a.err is None and b.err is None:
        return _Vec(np.logical_or(a.data, b.data))
    ta, _ = _definite(a)
    tb, _ = _definite(b)
    true = np.logical_or(ta, tb)
    return _Vec(true, np.logical_and(_err_or(a.err, b.err), np.logical_not(true)))


def _str_table(a: _Strs, fn: Callable[[str], Any], dtype: Any) -> Any:
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


def _cmp_strs(op: str, a: _Strs, b: _Strs) -> _Vec:
    """String comparison in code-point order (= CEL's UTF-8 byte order)."""
    err = _err_or(a.err, b.err)
    fn = _CMP[op]
    s = b.scalar()
    if s is not None:
        return _Vec(_str_table(a, lambda x: fn(x, s), bool), err)
    s = a.scalar()
    if s is not None:
        flipped = _CMP[_FLIP[op]]
        return _Vec(_str_table(b, lambda x: flipped(x, s), bool), err)
    # Two columns: rank every distinct string of both tables, compare ranks.
    order = {v: i for i, v in enumerate(sorted(set(a.table) | set(b.table)))}
    ra = np.fromiter((order[v] for v in a.table), np.int64, len(a.table))[a.codes]
    rb = np.fromiter((order[v] for v in b.table), np.int64, len(b.table))[b.codes]
    return _Vec(_NP_CMP[op](ra, rb), err)


def _cmp(op: str, a: Value, b: Value) -> _Vec:
    if isinstance(a, _Strs) and isinstance(b, _Strs):
        return _cmp_strs(op, a, b)
    assert isinstance(a, _Vec) and isinstance(b, _Vec)
    return _Vec(_NP_CMP[op](a.data, b.data), _err_or(a.err, b.err))


def _where(cond: _Vec, a: Value, b: Value) -> Value:
    """CEL ``c ? a : b``: only the chosen branch's errors count."""
    c = cond.data
    err = _err_or(
        cond.err,
        None if a.err is None else np.logical_and(c, a.err),
        None if b.err is None else np.logical_and(np.logical_not(c), b.err),
    )
    if isinstance(a, _Strs) and isinstance(b, _Strs):
        table = [*a.table, *b.table]
        codes = np.where(c, a.codes, np.asarray(b.codes) + len(a.table))
        return _Strs(codes, table, err)
    assert isinstance(a, _Vec) and isinstance(b, _Vec)
    return _Vec(np.where(c, a.data, b.data), err)


# --- compilation -------------------------------------------------------------------------------

Fn = Callable[[Frame, Env], Value]


@dataclass(slots=True)
class _Node:
    """A compiled sub-expression: its CEL type, how to compute it, and what it reads.

    ``kind`` is int, double, bool, string, list (a list attribute, by name in ``attr``) or
    lits (a list literal, ``items``). ``scalar`` means it reads no attribute (shape ()).
    ``rng`` bounds an int's values, to rule out overflow statically.
    """

    kind: str
    fn: Fn | None = None
    scalar: bool = False
    rng: tuple[int, int] | None = None
    attr: str | None = None
    items: tuple[_Node, ...] = ()


def _checked_range(lo: int, hi: int) -> tuple[int, int]:
    if lo < INT64_MIN or hi > INT64_MAX:
        raise Unsupported("integer arithmetic that may overflow")
    return lo, hi


_STRING_LITERAL = re.compile(r'^([rR]?)("""|\'\'\'|"|\')(.*)\2$', re.S)


def _literal(token: lark.Token) -> _Node:
    kind, text = token.type, str(token)
    if kind == "INT_LIT":
        neg = text.startswith("-")
        body = text[1:] if neg else text
        value = int(body[2:], 16) if body[:2].lower() == "0x" else int(body, 10)
        value = -value if neg else value
        if not INT64_MIN <= value <= INT64_MAX:
            raise Unsupported("integer literal out of range")
        const = np.int64(value)
        return _Node("int", lambda f, e: _Vec(const), True, (value, value))
    if kind == "FLOAT_LIT":
        dconst = np.float64(float(text))
        return _Node("double", lambda f, e: _Vec(dconst), True)
    if kind == "BOOL_LIT":
        bconst = np.bool_(text == "true")
        return _Node("bool", lambda f, e: _Vec(bconst), True)
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        match = _STRING_LITERAL.match(text)
        if match is None:
            raise Unsupported("string literal form")
        raw, body = match.group(1), match.group(3)
        if not raw and "\\" in body:
            raise Unsupported("string literal with escapes")
        if "\r" in body:
            raise Unsupported("string literal with carriage return")
        table = [body]
        code = np.intp(0)
        return _Node("string", lambda f, e: _Strs(code, table), True)
    raise Unsupported(f"{kind.lower().removesuffix('_lit')} literal")


_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": str.__contains__,
}
_PASSTHROUGH = frozenset(
    {
        "expr",
        "conditionalor",
        "conditionaland",
        "relation",
        "addition",
        "multiplication",
        "unary",
        "member",
        "primary",
        "paren_expr",
    }
)


class _Compiler:
    """Lark tree -> ``_Node``; raises ``Unsupported`` outside the vectorized subset."""

    def __init__(self, attributes: Mapping[str, str]) -> None:
        self.attributes = attributes
        self.deps: set[str] = set()

    def compile(self, tree: lark.Tree) -> _Node:
        node = self.walk(tree, {})
        if node.kind != "bool":
            raise Unsupported(f"result is {node.kind}")
        return node

    def walk(self, tree: Any, scope: dict[str, str]) -> _Node:
        # The grammar wraps every operand in one rule per precedence level: skip them.
        while isinstance(tree, lark.Tree) and tree.data in _PASSTHROUGH and len(tree.children) == 1:
            tree = tree.children[0]
        if isinstance(tree, lark.Token):
            raise Unsupported(f"token {tree.type}")
        method = getattr(self, "r_" + str(tree.data), None)
        if method is None:
            raise Unsupported(str(tree.data).replace("_", " "))
        node: _Node = method(tree.children, scope)
        return node

    def passthrough(self, children: list[Any], scope: dict[str, str]) -> _Node:
        if len(children) != 1:
            raise Unsupported("unexpected shape")
        return self.walk(children[0], scope)

    r_member = r_primary = r_paren_expr = passthrough

    # -- logic ---------------------------------------------------------------------------------

    def r_expr(self, children: list[Any], scope: dict[str, str]) -> _Node:
        if len(children) == 1:
            return self.walk(children[0], scope)
        cond, a, b = (self.walk(c, scope) for c in children)
        if (
            cond.kind != "bool"
            or a.kind != b.kind
            or a.kind not in ("int", "double", "bool", "string")
        ):
            raise Unsupported("conditional over these types")
        cf, af, bf = cond.fn, a.fn, b.fn
        assert cf and af and bf

        def ternary(f: Frame, e: Env) -> Value:
            c = cf(f, e)
            assert isinstance(c, _Vec)
            return _where(c, af(f, e), bf(f, e))

        rng = None
        if a.rng and b.rng:
            rng = (min(a.rng[0], b.rng[0]), max(a.rng[1], b.rng[1]))
        return _Node(a.kind, ternary, cond.scalar and a.scalar and b.scalar, rng)

    def _logic(self, children: list[Any], scope: dict[str, str], combine: Callable) -> _Node:
        if len(children) == 1:
            return self.walk(children[0], scope)
        a, b = (self.walk(c, scope) for c in children)
        if a.kind != "bool" or b.kind != "bool":
            raise Unsupported("logic on non-booleans")
        af, bf = a.fn, b.fn
        assert af and bf
        return _Node("bool", lambda f, e: combine(af(f, e), bf(f, e)), a.scalar and b.scalar)

    def r_conditionalor(self, children: list[Any], scope: dict[str, str]) -> _Node:
        return self._logic(children, scope, _or)

    def r_conditionaland(self, children: list[Any], scope: dict[str, str]) -> _Node:
        return self._logic(children, scope, _and)

    # -- relations -----------------------------------------------------------------------------

    def r_relation(self, children: list[Any], scope: dict[str, str]) -> _Node:
        if len(children) == 1:
            return self.walk(children[0], scope)
        op_tree, rhs_tree = children
        op = str(op_tree.data)
        a = self.walk(op_tree.children[0], scope)
        b = self.walk(rhs_tree, scope)
        if op == "relation_in":
            return self._in(a, b)
        if a.kind != b.kind or a.kind not in ("int", "double", "bool", "string"):
            raise Unsupported(f"comparison of {a.kind} with {b.kind}")
        af, bf = a.fn, b.fn
        assert af and bf
        return _Node("bool", lambda f, e: _cmp(op, af(f, e), bf(f, e)), a.scalar and b.scalar)

    def _in(self, a: _Node, b: _Node) -> _Node:
        af = a.fn
        assert af
        if b.kind == "list":
            if a.kind != "string":
                raise Unsupported("`in` of a non-string in a list attribute")
            name = b.attr
            assert name

            def in_list_attr(f: Frame, e: Env) -> Value:
                x = af(f, e)
                assert isinstance(x, _Strs)
                counts = f.list_counts(name)
                s = x.scalar()
                if s is not None:
                    col = counts.get(s)
                    data = np.zeros(f.n, bool) if col is None else col > 0
                    return _Vec(data, x.err)
                data = np.zeros(f.n, bool)
                for member, col in counts.items():
                    is_member = _str_table(x, member.__eq__, bool)
                    data |= is_member & (col > 0)
                return _Vec(data, x.err)

            return _Node("bool", in_list_attr)
        if b.kind == "lits":
            if any(item.kind != a.kind for item in b.items) or a.kind not in (
                "int",
                "double",
                "bool",
                "string",
            ):
                raise Unsupported(f"`in` of {a.kind} in a mixed or nested list")
            fns = [item.fn for item in b.items]
            if a.kind == "string" and all(item.scalar for item in b.items):
                # The common case: a string attribute against literal strings, one table lookup.
                def in_strings(f: Frame, e: Env) -> Value:
                    x = af(f, e)
                    assert isinstance(x, _Strs)
                    wanted = set()
                    for fn in fns:
                        s = fn(f, e)  # type: ignore[misc]
                        assert isinstance(s, _Strs)
                        wanted.add(s.scalar())
                    return _Vec(_str_table(x, wanted.__contains__, bool), x.err)

                return _Node("bool", in_strings, a.scalar)

            def in_items(f: Frame, e: Env) -> Value:
                x = af(f, e)
                data: Any = np.bool_(False)
                errs = [x.err]
                for fn in fns:
                    item = fn(f, e)  # type: ignore[misc]
                    errs.append(item.err)
                    data = np.logical_or(data, _cmp("relation_eq", x, item).data)
                return _Vec(data, _err_or(*errs))

            return _Node("bool", in_items, a.scalar and all(i.scalar for i in b.items))
        raise Unsupported(f"`in` on {b.kind}")

    # -- arithmetic ----------------------------------------------------------------------------

    def r_addition(self, children: list[Any], scope: dict[str, str]) -> _Node:
        return self._arith(children, scope)

    def r_multiplication(self, children: list[Any], scope: dict[str, str]) -> _Node:
        return self._arith(children, scope)

    def _arith(self, children: list[Any], scope: dict[str, str]) -> _Node:
        if len(children) == 1:
            return self.walk(children[0], scope)
        op_tree, rhs_tree = children
        op = str(op_tree.data).split("_")[1]
        a = self.walk(op_tree.children[0], scope)
        b = self.walk(rhs_tree, scope)
        if a.kind != b.kind:
            raise Unsupported(f"arithmetic on {a.kind} and {b.kind}")
        af, bf = a.fn, b.fn
        assert af and bf
        scalar = a.scalar and b.scalar
        if a.kind == "double" and op in ("add", "sub", "mul", "div"):
            ufunc = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op]

            def double_op(f: Frame, e: Env) -> Value:
                x, y = _vec(af(f, e)), _vec(bf(f, e))
                with np.errstate(all="ignore"):
                    return _Vec(ufunc(x.data, y.data), _err_or(x.err, y.err))

            return _Node("double", double_op, scalar)
        if a.kind == "string" and op == "add":
            return self._concat(a, b)
        if a.kind != "int":
            raise Unsupported(f"{op} on {a.kind}")
        assert a.rng and b.rng
        (alo, ahi), (blo, bhi) = a.rng, b.rng
        amax = max(abs(alo), abs(ahi))
        if op == "add":
            rng = _checked_range(alo + blo, ahi + bhi)
            ufunc = np.add
        elif op == "sub":
            rng = _checked_range(alo - bhi, ahi - blo)
            ufunc = np.subtract
        elif op == "mul":
            products = (alo * blo, alo * bhi, ahi * blo, ahi * bhi)
            rng = _checked_range(min(products), max(products))
            ufunc = np.multiply
        else:
            may_be_zero = blo <= 0 <= bhi
            if op == "div":
                rng = _checked_range(-amax, amax)
            else:
                bound = min(amax, max(abs(blo), abs(bhi)))
                rng = (0 if alo >= 0 else -bound, 0 if ahi <= 0 else bound)
            is_div = op == "div"

            def int_div(f: Frame, e: Env) -> Value:
                x, y = _vec(af(f, e)), _vec(bf(f, e))
                errs = [x.err, y.err]
                divisor = y.data
                if may_be_zero:
                    zero = np.equal(divisor, 0)
                    errs.append(zero)
                    divisor = np.where(zero, 1, divisor)
                rem = np.fmod(x.data, divisor)  # C semantics: the sign of the dividend
                data = (x.data - rem) // divisor if is_div else rem
                return _Vec(data, _err_or(*errs))

            return _Node("int", int_div, scalar, rng)

        def int_op(f: Frame, e: Env) -> Value:
            x, y = _vec(af(f, e)), _vec(bf(f, e))
            return _Vec(ufunc(x.data, y.data), _err_or(x.err, y.err))

        return _Node("int", int_op, scalar, rng)

    def _concat(self, a: _Node, b: _Node) -> _Node:
        af, bf = a.fn, b.fn
        assert af and bf
        if not (a.scalar or b.scalar):
            raise Unsupported("concatenation of two string attributes")

        def concat(f: Frame, e: Env) -> Value:
            x, y = af(f, e), bf(f, e)
            assert isinstance(x, _Strs) and isinstance(y, _Strs)
            err = _err_or(x.err, y.err)
            t = y.scalar()
            if t is not None:
                return _Strs(x.codes, [s + t for s in x.table], err)
            s = x.scalar()
            assert s is not None
            return _Strs(y.codes, [s + u for u in y.table], err)

        return _Node("string", concat, a.scalar and b.scalar)

    def r_unary(self, children: list[Any], scope: dict[str, str]) -> _Node:
        if len(children) == 1:
            return self.walk(children[0], scope)
        op_tree, operand_tree = children
        a = self.walk(operand_tree, scope)
        af = a.fn
        assert af
        if op_tree.data == "unary_not":
            if a.kind != "bool":
                raise Unsupported(f"! on {a.kind}")

            def negate(f: Frame, e: Env) -> Value:
                x = _vec(af(f, e))
                return _Vec(np.logical_not(x.data), x.err)

            return _Node("bool", negate, a.scalar)
        if a.kind == "int":
            assert a.rng
            rng = _checked_range(-a.rng[1], -a.rng[0])
        elif a.kind == "double":
            rng = None
        else:
            raise Unsupported(f"- on {a.kind}")

        def minus(f: Frame, e: Env) -> Value:
            x = _vec(af(f, e))
            return _Vec(np.negative(x.data), x.err)

        return _Node(a.kind, minus, a.scalar, rng)

    # -- leaves --------------------------------------------------------------------------------

    def r_literal(self, children: list[Any], scope: dict[str, str]) -> _Node:
        return _literal(children[0])

    def r_ident(self, children: list[Any], scope: dict[str, str]) -> _Node:
        name = str(children[0])
        if name in scope:
            # A macro's bound variable: always a string (lists hold strings), a constant.
            def bound(f: Frame, e: Env) -> Value:
                return e[name]

            return _Node("string", bound, True)
        kind = self.attributes.get(name)
        if kind is None:
            raise Unsupported(f"unknown name {name}")
        self.deps.add(name)
        if kind == "proficiency":
            return _Node("int", lambda f, e: _Vec(f.column(name)), rng=PROFICIENCY_RANGE)
        if kind == "number":
            return _Node("double", lambda f, e: _Vec(f.column(name)))
        if kind == "boolean":
            return _Node("bool", lambda f, e: _Vec(f.column(name)))
        if kind == "string":

            def string(f: Frame, e: Env) -> Value:
                codes, table = f.strings(name)
                return _Strs(codes, table)

            return _Node("string", string)
        if kind == "list":
            return _Node("list", attr=name)
        raise Unsupported(f"attribute type {kind}")

    def r_list_lit(self, children: list[Any], scope: dict[str, str]) -> _Node:
        if not children:
            return _Node("lits", scalar=True)
        items = tuple(self.walk(c, scope) for c in children[0].children)
        if any(i.kind in ("list", "lits") for i in items):
            raise Unsupported("nested lists")
        return _Node("lits", scalar=all(i.scalar for i in items), items=items)

    # -- calls ---------------------------------------------------------------------------------

    def r_ident_arg(self, children: list[Any], scope: dict[str, str]) -> _Node:
        name = str(children[0])
        args = list(children[1].children) if len(children) > 1 else []
        if len(args) != 1:
            raise Unsupported(f"function {name}")
        if name == "size":
            return self._size(self.walk(args[0], scope))
        if name == "double":
            a = self.walk(args[0], scope)
            af = a.fn
            if a.kind == "double":
                return a
            if a.kind != "int" or af is None:
                raise Unsupported(f"double() of {a.kind}")

            def to_double(f: Frame, e: Env) -> Value:
                x = _vec(af(f, e))
                return _Vec(np.asarray(x.data, dtype=np.float64), x.err)

            return _Node("double", to_double, a.scalar)
        raise Unsupported(f"function {name}")

    def _size(self, a: _Node) -> _Node:
        if a.kind == "list":
            name = a.attr
            assert name
            return _Node("int", lambda f, e: _Vec(f.list_size(name)), rng=_SIZE_RANGE)
        if a.kind == "lits":
            n = np.int64(len(a.items))
            return _Node("int", lambda f, e: _Vec(n), True, (len(a.items), len(a.items)))
        if a.kind == "string":
            af = a.fn
            assert af

            def str_size(f: Frame, e: Env) -> Value:
                x = af(f, e)
                assert isinstance(x, _Strs)
                return _Vec(_str_table(x, len, np.int64), x.err)

            return _Node("int", str_size, a.scalar, _SIZE_RANGE)
        raise Unsupported(f"size() of {a.kind}")

    def r_member_dot_arg(self, children: list[Any], scope: dict[str, str]) -> _Node:
        receiver_tree, method_token = children[0], str(children[1])
        args = list(children[2].children) if len(children) > 2 else []
        if method_token in ("exists", "all", "exists_one"):
            return self._macro(method_token, receiver_tree, args, scope)
        receiver = self.walk(receiver_tree, scope)
        if method_token == "size" and not args:
            return self._size(receiver)
        if method_token in ("startsWith", "endsWith", "contains") and len(args) == 1:
            arg = self.walk(args[0], scope)
            if receiver.kind != "string" or arg.kind != "string":
                raise Unsupported(f"{method_token} on {receiver.kind}")
            if not arg.scalar:
                raise Unsupported(f"{method_token} with an attribute argument")
            rf, argf = receiver.fn, arg.fn
            assert rf and argf
            test = _STRING_TESTS[method_token]

            def string_test(f: Frame, e: Env) -> Value:
                x, y = rf(f, e), argf(f, e)
                assert isinstance(x, _Strs) and isinstance(y, _Strs)
                s = y.scalar()
                assert s is not None
                tested = _str_table(x, lambda v: test(v, s), bool)
                return _Vec(tested, _err_or(x.err, y.err))

            return _Node("bool", string_test, receiver.scalar)
        raise Unsupported(f"method {method_token}")

    def _macro(
        self, name: str, receiver_tree: Any, args: list[Any], scope: dict[str, str]
    ) -> _Node:
        receiver = self.walk(receiver_tree, scope)
        if receiver.kind != "list" or len(args) != 2:
            raise Unsupported(f"{name} over {receiver.kind}")
        var = self.walk_ident_name(args[0])
        pred = self.walk(args[1], {**scope, var: "string"})
        if pred.kind != "bool":
            raise Unsupported(f"{name} predicate is {pred.kind}")
        attr, pf = receiver.attr, pred.fn
        assert attr and pf

        def members(f: Frame, e: Env) -> Iterable[tuple[Any, _Vec]]:
            """(present in each row, predicate for that member) for every list member."""
            for member, counts in f.list_counts(attr).items():
                p = pf(f, {**e, var: _Strs(np.intp(0), [member])})
                assert isinstance(p, _Vec)
                yield counts, p

        if name == "exists":

            def exists(f: Frame, e: Env) -> Value:
                acc = _Vec(np.bool_(False))
                for counts, p in members(f, e):
                    present = counts > 0
                    hit = np.logical_and(present, p.data)
                    err = None if p.err is None else np.logical_and(present, p.err)
                    acc = _or(acc, _Vec(hit, err))
                return acc

            return _Node("bool", exists)
        if name == "all":

            def all_(f: Frame, e: Env) -> Value:
                acc = _Vec(np.bool_(True))
                for counts, p in members(f, e):
                    present = counts > 0
                    ok = np.logical_or(np.logical_not(present), p.data)
                    err = None if p.err is None else np.logical_and(present, p.err)
                    acc = _and(acc, _Vec(ok, err))
                return acc

            return _Node("bool", all_)

        def exists_one(f: Frame, e: Env) -> Value:
            count: Any = np.int64(0)
            errs = []
            for counts, p in members(f, e):
                hit = p.data if p.err is None else np.logical_and(p.data, np.logical_not(p.err))
                count = count + counts.astype(np.int64) * hit
                if p.err is not None:
                    errs.append(np.logical_and(counts > 0, p.err))
            return _Vec(np.equal(count, 1), _err_or(*errs))

        return _Node("bool", exists_one)

    def walk_ident_name(self, tree: Any) -> str:
        """The bound variable of a macro: an expression that is just an identifier."""
        while isinstance(tree, lark.Tree) and tree.data != "ident":
            if len(tree.children) != 1:
                raise Unsupported("macro variable is not a name")
            tree = tree.children[0]
        if not isinstance(tree, lark.Tree):
            raise Unsupported("macro variable is not a name")
        return str(tree.children[0])


@dataclass(slots=True)
class CompiledSelection:
    """One selection text: vectorized form, or why not; the checked CEL program on demand."""

    text: str
    node: _Node | None
    reason: str | None  # why the selection falls back (None when vectorized)
    deps: frozenset[str] | None  # attributes read (None: unknown, assume all)
    checker: SelectionCompiler
    _program: Any = None

    @property
    def vectorized(self) -> bool:
        return self.node is not None

    @property
    def program(self) -> Any:
        """The cel-expr-python program: the reference semantics, and the fallback."""
        if self._program is None:
            self._program = self.checker.compile(self.text)
        return self._program

    def evaluate(self, frame: Frame) -> np.ndarray:
        """Boolean match per row of the frame (vectorized selections only)."""
        assert self.node is not None and self.node.fn is not None
        value = self.node.fn(frame, {})
        assert isinstance(value, _Vec)
        data = value.data
        if value.err is not None:
            data = np.logical_and(data, np.logical_not(value.err))
        return np.broadcast_to(np.asarray(data, dtype=bool), (frame.n,))


def compile_selection(
    text: str, attributes: Mapping[str, str], checker: SelectionCompiler, checked: bool = False
) -> CompiledSelection:
    """Type-check with cel-expr-python (SelectionError if bad), then try to vectorize.

    ``checked``: the text already passed the same check (a validated document), so a text
    that vectorizes skips cel-expr-python entirely; one that does not is compiled anyway.
    """
    if not checked:
        checker.compile(text)
    try:
        tree = _parser().parse(text)
    except lark.exceptions.LarkError as exc:
        selection = CompiledSelection(text, None, f"parser: {type(exc).__name__}", None, checker)
        selection.program  # noqa: B018 - raises SelectionError for a bad text
        return selection
    compiler = _Compiler(attributes)
    try:
        node = compiler.compile(tree)
    except (Unsupported, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, Unsupported) else "too deeply nested"
        # Any attribute name in the text (even a shadowed one) may be read: a safe superset.
        names = {str(t.children[0]) for t in tree.find_data("ident")}
        deps = frozenset(names & attributes.keys())
        selection = CompiledSelection(text, None, reason, deps, checker)
        selection.program  # noqa: B018 - raises SelectionError for a bad text
        return selection
    return CompiledSelection(text, node, None, frozenset(compiler.deps), checker)


# --- expert attribute values -------------------------------------------------------------------


def _describe(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, str | int | float) else repr(value)


def _normalize(kind: str, value: Any) -> Any:
    """One attribute value as the columns store it; ValueError says what is wrong."""
    if kind == "proficiency":
        if not is_proficiency(value):
            raise ValueError(
                f"expected a proficiency from {PROFICIENCY_MIN} to {PROFICIENCY_MAX}, "
                f"got {_describe(value)}"
            )
        return value
    if kind == "number":
        # A column stores any float; which numbers an attribute may have (finite) is checked
        # where values come in (limits.is_attribute_number).
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


class _Columns:
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
        # Flatten every (expert, attribute, value) the experts list, then group by attribute
        # with numpy: list comprehensions and argsort instead of a Python loop per value.
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
                allowed: set[type] = _ALLOWED_TYPES[kind]
                if not set(map(type, values)) <= allowed:
                    self._raise_first(ids, rows, name, kind, values)
                arr = np.array(values, dtype=_DTYPES[kind])
                if kind == "proficiency" and (
                    arr.min() < PROFICIENCY_RANGE[0] or arr.max() > PROFICIENCY_RANGE[1]
                ):
                    self._raise_first(ids, rows, name, kind, values)
                self.cols[name][rows] = arr
            elif kind == "string":
                if not set(map(type, values)) <= {str}:
                    self._raise_first(ids, rows, name, kind, values)
                index = self.table_index[name]
                codes = [index.setdefault(v, len(index)) for v in values]
                self.tables[name] = list(index)
                self.codes[name][rows] = codes
            else:
                members = (
                    [m for v in values for m in v]
                    if all(type(v) in (list, tuple) for v in values)
                    else None
                )
                if members is None or not set(map(type, members)) <= {str}:
                    self._raise_first(ids, rows, name, kind, values)
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


class _RowFrame:
    """One expert's values in the shape of ``_Columns`` (arrays of length 1)."""

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


def _cel_data(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _cel_match(program: Any, data: Any) -> bool:
    """cel-expr-python's verdict; evaluation errors (and non-booleans) mean no match."""
    try:
        value = program.eval(data) if not isinstance(data, dict) else program.eval(data=data)
    except Exception:  # a runtime failure of one selection must not stop the others
        return False
    return value.value() is True


# --- the index ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpertChange:
    """What one expert's update did to the match sets: (queue id, step) pairs joined / left."""

    expert_id: str
    joined: frozenset[tuple[str, int]]
    left: frozenset[tuple[str, int]]

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)


@dataclass(frozen=True, slots=True)
class QueueChange:
    """A queue's match sets (one per escalation step) before and after; () when absent."""

    queue_id: str
    before: tuple[frozenset[str], ...]
    after: tuple[frozenset[str], ...]

    def __bool__(self) -> bool:
        return self.before != self.after


@dataclass(slots=True)
class _Selection:
    compiled: CompiledSelection
    mask: np.ndarray  # packed bits over rows
    users: set[tuple[str, int]]
    members: frozenset[str] | None = None  # materialized match set, kept in step with mask


class EligibilityIndex:
    """Match sets of every (queue, escalation step), kept current as experts and queues change.

    Identical selection texts are compiled and evaluated once, whichever queues use them.
    Match sets are frozensets built on first request and shared by every routing config
    version until a change touches them. Not thread-safe: one owner (the runtime's routing
    loop) changes and reads it.
    """

    def __init__(
        self,
        attributes: Iterable[AttributeDecl],
        experts: Iterable[tuple[str, Mapping[str, Any]]] = (),
        queues: Iterable[tuple[str, Sequence[str]]] = (),
        checked: bool = False,
    ) -> None:
        """``checked``: the selections were already type-checked (a validated document)."""
        started = time.perf_counter()
        decls = list(attributes)
        self.attributes: dict[str, str] = {a.name: str(a.type) for a in decls}
        self._checker = SelectionCompiler(decls)  # type: ignore[arg-type]
        self._columns = _Columns(self.attributes)
        self._sources: dict[str, Mapping[str, Any]] = {}
        self._selections: dict[str, _Selection] = {}
        self._queues: dict[str, tuple[str, ...]] = {}
        expert_list = list(experts)
        self._columns.load(expert_list)
        self._sources = {eid: attrs for eid, attrs in expert_list}
        loaded = time.perf_counter()
        queue_list = [(qid, tuple(selects)) for qid, selects in queues]
        compiled = self._compile_all(queue_list, checked)
        self._evaluate_bulk(compiled)
        for qid, texts in queue_list:
            self._queues[qid] = texts
            for step, text in enumerate(texts):
                self._selections[text].users.add((qid, step))
        fallback = [s for s in self._selections.values() if not s.compiled.vectorized]
        log.info(
            "eligibility built experts=%d queues=%d selections=%d vectorized=%d fallback=%d "
            "load_s=%.3f evaluate_s=%.3f",
            len(self._columns.row),
            len(self._queues),
            len(self._selections),
            len(self._selections) - len(fallback),
            len(fallback),
            loaded - started,
            time.perf_counter() - loaded,
        )
        for sel in fallback:
            log.warning(
                "selection evaluated per expert (slower) queues=%s reason=%r select=%r",
                ",".join(sorted({q for q, _ in sel.users})),
                sel.compiled.reason,
                sel.compiled.text,
            )

    @classmethod
    def from_document(cls, doc: ConfigDocument) -> EligibilityIndex:
        return cls(
            doc.attributes,
            ((e.id, e.attributes) for e in doc.experts),
            ((q.id, q.selections()) for q in doc.queues),
            checked=True,
        )

    # -- reading -------------------------------------------------------------------------------

    @property
    def queue_ids(self) -> list[str]:
        return list(self._queues)

    @property
    def expert_ids(self) -> list[str]:
        return list(self._columns.row)

    def selections(self, queue_id: str) -> tuple[str, ...]:
        return self._queues[queue_id]

    def matches(self, queue_id: str) -> tuple[frozenset[str], ...]:
        """The experts matching the queue at each escalation step (0 = ``select``)."""
        return tuple(self._members(self._selections[t]) for t in self._queues[queue_id])

    def all_matches(self) -> dict[str, tuple[frozenset[str], ...]]:
        return {qid: self.matches(qid) for qid in self._queues}

    def fallback_queues(self) -> dict[str, str]:
        """Queues with a selection outside the vectorized subset -> the reason."""
        out: dict[str, str] = {}
        for sel in self._selections.values():
            if sel.compiled.reason is not None:
                for qid, _ in sel.users:
                    out.setdefault(qid, sel.compiled.reason)
        return out

    def selection_count(self) -> tuple[int, int]:
        """(distinct selections, of which vectorized)."""
        vec = sum(1 for s in self._selections.values() if s.compiled.vectorized)
        return len(self._selections), vec

    def expert_matches(self, expert_id: str) -> frozenset[tuple[str, int]]:
        """Every (queue, step) the expert matches."""
        r = self._columns.row[expert_id]
        return frozenset(
            user for sel in self._selections.values() if _bit(sel.mask, r) for user in sel.users
        )

    # -- changes -------------------------------------------------------------------------------

    def update_expert(self, expert_id: str, attributes: Mapping[str, Any]) -> ExpertChange:
        """Add or change one expert; re-evaluates only selections reading changed attributes."""
        cols = self._columns
        values = cols.normalize_row(expert_id, attributes)  # raises before anything changes
        r = cols.row.get(expert_id)
        if r is None:
            changed: set[str] | None = None
        else:
            old = cols.read_row(r)
            changed = {k for k, v in values.items() if old[k] != v}
        verdicts = self._evaluate_row(values, changed)
        if r is None:
            r = cols.allocate(expert_id)
            self._grow_masks()
        cols.write_row(r, values)
        self._sources[expert_id] = attributes
        joined: set[tuple[str, int]] = set()
        left: set[tuple[str, int]] = set()
        for sel, match in verdicts:
            if match == _bit(sel.mask, r):
                continue
            _set_bit(sel.mask, r, match)
            # Rebuilt from the mask when next asked for: a burst of updates (a directory
            # sync) costs one rebuild per changed set, not one copy per update.
            sel.members = None
            (joined if match else left).update(sel.users)
        change = ExpertChange(expert_id, frozenset(joined), frozenset(left))
        if change:
            log.debug(
                "expert eligibility changed expert=%s joined=%d left=%d",
                expert_id,
                len(joined),
                len(left),
            )
        return change

    def remove_expert(self, expert_id: str) -> ExpertChange:
        cols = self._columns
        if expert_id not in cols.row:
            return ExpertChange(expert_id, frozenset(), frozenset())
        r = cols.row[expert_id]
        left: set[tuple[str, int]] = set()
        for sel in self._selections.values():
            if _bit(sel.mask, r):
                _set_bit(sel.mask, r, False)
                sel.members = None
                left.update(sel.users)
        cols.release(expert_id)
        del self._sources[expert_id]
        return ExpertChange(expert_id, frozenset(), frozenset(left))

    def set_queue(self, queue_id: str, selects: Sequence[str]) -> QueueChange:
        """Add or change a queue's selections; raises InvalidInput (changing nothing) if bad."""
        texts = tuple(selects)
        if not texts:
            raise InvalidInput(
                f"queue {queue_id!r} needs a selection",
                [Problem(f"queues[{queue_id}].select", "required")],
            )
        before = self.matches(queue_id) if queue_id in self._queues else ()
        compiled = self._compile_all([(queue_id, texts)])
        self._evaluate_bulk(compiled)
        old = self._queues.get(queue_id, ())
        self._queues[queue_id] = texts  # an existing queue keeps its place in the order
        for step, text in enumerate(texts):
            self._selections[text].users.add((queue_id, step))
        self._release(queue_id, old, keep=texts)
        for c in compiled:
            if not c.vectorized:
                log.warning(
                    "selection evaluated per expert (slower) queue=%s reason=%r select=%r",
                    queue_id,
                    c.reason,
                    c.text,
                )
        return QueueChange(queue_id, before, self.matches(queue_id))

    def remove_queue(self, queue_id: str) -> QueueChange:
        if queue_id not in self._queues:
            return QueueChange(queue_id, (), ())
        before = self.matches(queue_id)
        self._release(queue_id, self._queues.pop(queue_id))
        return QueueChange(queue_id, before, ())

    def sync(self, doc: ConfigDocument) -> str:
        """Bring the index in line with a document, touching only what differs; says what it did.

        Different attribute declarations change every column, so they rebuild everything.
        """
        declared = {a.name: str(a.type) for a in doc.attributes}
        if declared != self.attributes:
            fresh = EligibilityIndex.from_document(doc)
            self.__dict__.update(fresh.__dict__)
            return "rebuilt: attribute declarations changed"
        experts = doc.expert_map
        removed = [eid for eid in self._columns.row if eid not in experts]
        for eid in removed:
            self.remove_expert(eid)
        updated = 0
        for e in doc.experts:
            if self._sources.get(e.id) != e.attributes:
                self.update_expert(e.id, e.attributes)
                updated += 1
        queues = doc.queue_map
        dropped = [qid for qid in self._queues if qid not in queues]
        for qid in dropped:
            self.remove_queue(qid)
        reset = 0
        for q in doc.queues:
            if self._queues.get(q.id) != tuple(q.selections()):
                self.set_queue(q.id, q.selections())
                reset += 1
        return (
            f"synced: experts updated={updated} removed={len(removed)}, "
            f"queues set={reset} removed={len(dropped)}"
        )

    # -- internals -----------------------------------------------------------------------------

    def _compile_all(
        self, queues: Sequence[tuple[str, Sequence[str]]], checked: bool = False
    ) -> list[CompiledSelection]:
        """Compile every new distinct text; InvalidInput lists every bad one (nothing changes)."""
        problems: list[Problem] = []
        out: dict[str, CompiledSelection] = {}
        for qid, texts in queues:
            for step, text in enumerate(texts):
                if text in self._selections or text in out:
                    continue
                try:
                    out[text] = compile_selection(text, self.attributes, self._checker, checked)
                except SelectionError as exc:
                    where = "select" if step == 0 else f"escalate[{step - 1}].select"
                    problems.append(Problem(f"queues[{qid}].{where}", str(exc)))
        if problems:
            raise InvalidInput(f"{len(problems)} bad selection(s); nothing changed", problems)
        return list(out.values())

    def _evaluate_bulk(self, compiled: Sequence[CompiledSelection]) -> None:
        cols = self._columns
        alive = cols.alive[: cols.n]
        fallback: list[tuple[CompiledSelection, np.ndarray]] = []
        for c in compiled:
            if c.vectorized:
                match = np.logical_and(c.evaluate(cols), alive)
            else:
                match = np.zeros(cols.n, dtype=bool)
                fallback.append((c, match))
            self._selections[c.text] = _Selection(c, _pack(match, cols.capacity), set())
        for c, match in fallback:
            self._evaluate_fallback(c, match)
            self._selections[c.text].mask = _pack(match, cols.capacity)

    def _evaluate_fallback(self, c: CompiledSelection, match: np.ndarray) -> None:
        """Exact per-expert CEL, once per distinct combination of the attributes it reads.

        A selection's verdict depends only on the attributes it names, so experts sharing
        those values share the verdict: ``region.matches(...) && skill >= 60`` needs at most
        (regions x 101) evaluations, not one per expert.
        """
        cols = self._columns
        rows = np.flatnonzero(cols.alive[: cols.n])
        deps = sorted(c.deps if c.deps is not None else self.attributes)
        if not len(rows):
            return
        # One int64 key per expert: the attributes' value codes in mixed radix.
        key = np.zeros(len(rows), dtype=np.int64)
        for name in deps:
            distinct, codes = np.unique(cols.key_column(name)[rows], return_inverse=True)
            if int(key.max(initial=0) + 1) * len(distinct) >= 2**62:
                _, key = np.unique(key, return_inverse=True)  # renumber densely first
            key = key * len(distinct) + np.ravel(codes)
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        verdicts = np.zeros(len(first), dtype=bool)
        for g, r in enumerate(rows[first]):
            verdicts[g] = _cel_match(c.program, _cel_data(cols.read_row(int(r), deps)))
        match[rows] = verdicts[np.ravel(inverse)]
        log.info(
            "fallback selection evaluated experts=%d distinct_inputs=%d select=%r",
            len(rows),
            len(first),
            c.text,
        )

    def _evaluate_row(
        self, values: Mapping[str, Any], changed: set[str] | None
    ) -> list[tuple[_Selection, bool]]:
        frame = _RowFrame(self.attributes, values)
        activation = None
        out = []
        for sel in self._selections.values():
            c = sel.compiled
            if changed is not None and c.deps is not None and not (c.deps & changed):
                continue
            if c.vectorized:
                out.append((sel, bool(c.evaluate(frame)[0])))
            else:
                if activation is None:
                    activation = self._checker._env.Activation(_cel_data(values))
                out.append((sel, _cel_match(c.program, activation)))
        return out

    def _members(self, sel: _Selection) -> frozenset[str]:
        if sel.members is None:
            cols = self._columns
            rows = np.flatnonzero(np.unpackbits(sel.mask, count=cols.n))
            sel.members = frozenset(cols.ids[rows].tolist())
        return sel.members

    def _grow_masks(self) -> None:
        size = (self._columns.capacity + 7) // 8
        for sel in self._selections.values():
            if len(sel.mask) < size:
                mask = np.zeros(size, dtype=np.uint8)
                mask[: len(sel.mask)] = sel.mask
                sel.mask = mask

    def _release(self, queue_id: str, texts: Sequence[str], keep: Sequence[str] = ()) -> None:
        """Forget the queue's former use of ``texts`` (except the steps it still has in
        ``keep``); drop selections nobody uses any more."""
        for step, text in enumerate(texts):
            if step < len(keep) and keep[step] == text:
                continue
            sel = self._selections[text]
            sel.users.discard((queue_id, step))
            if not sel.users:
                del self._selections[text]


def _pack(match: np.ndarray, capacity: int) -> np.ndarray:
    packed = np.zeros((capacity + 7) // 8, dtype=np.uint8)
    bits = np.packbits(match)
    packed[: len(bits)] = bits
    return packed


def _bit(mask: np.ndarray, r: int) -> bool:
    return bool(mask[r >> 3] & (0x80 >> (r & 7)))


def _set_bit(mask: np.ndarray, r: int, value: bool) -> None:
    if value:
        mask[r >> 3] |= 0x80 >> (r & 7)
    else:
        mask[r >> 3] &= ~np.uint8(0x80 >> (r & 7))
