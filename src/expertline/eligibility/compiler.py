"""CEL -> numpy: a selection's syntax tree compiled into operations over whole columns.

The common subset (logic, comparisons, arithmetic, ``in``, ``size``, string
prefix/suffix/contains, the ``exists``/``all``/``exists_one`` macros over list attributes,
ternaries) becomes a tree of ``Node``s whose functions compute a ``Vec`` or ``Strs`` for every
row of a ``Frame`` at once. Anything else raises ``Unsupported`` with the reason, and the
selection is evaluated per expert instead. Integer overflow is excluded by interval analysis
(each int node carries the range of its values), integer division truncates and fails on zero.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import lark
import numpy as np

from expertline.eligibility.columns import PROFICIENCY_RANGE
from expertline.eligibility.values import (
    Env,
    Frame,
    Strs,
    Value,
    Vec,
    as_vec,
    cel_and,
    cel_or,
    compare,
    err_or,
    str_table,
    where,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_SIZE_RANGE = (0, 2**31 - 1)


class Unsupported(Exception):
    """The selection uses something outside the vectorized subset; evaluate it per expert."""


Fn = Callable[[Frame, Env], Value]


@dataclass(slots=True)
class Node:
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
    items: tuple[Node, ...] = ()


def _checked_range(lo: int, hi: int) -> tuple[int, int]:
    if lo < INT64_MIN or hi > INT64_MAX:
        raise Unsupported("integer arithmetic that may overflow")
    return lo, hi


_STRING_LITERAL = re.compile(r'^([rR]?)("""|\'\'\'|"|\')(.*)\2$', re.S)


def _literal(token: lark.Token) -> Node:
    kind, text = token.type, str(token)
    if kind == "INT_LIT":
        neg = text.startswith("-")
        body = text[1:] if neg else text
        value = int(body[2:], 16) if body[:2].lower() == "0x" else int(body, 10)
        value = -value if neg else value
        if not INT64_MIN <= value <= INT64_MAX:
            raise Unsupported("integer literal out of range")
        const = np.int64(value)
        return Node("int", lambda f, e: Vec(const), True, (value, value))
    if kind == "FLOAT_LIT":
        dconst = np.float64(float(text))
        return Node("double", lambda f, e: Vec(dconst), True)
    if kind == "BOOL_LIT":
        bconst = np.bool_(text == "true")
        return Node("bool", lambda f, e: Vec(bconst), True)
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
        return Node("string", lambda f, e: Strs(code, table), True)
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


class Compiler:
    """Lark tree -> ``Node``; raises ``Unsupported`` outside the vectorized subset."""

    def __init__(self, attributes: Mapping[str, str]) -> None:
        self.attributes = attributes
        self.deps: set[str] = set()

    def compile(self, tree: lark.Tree) -> Node:
        node = self.walk(tree, {})
        if node.kind != "bool":
            raise Unsupported(f"result is {node.kind}")
        return node

    def walk(self, tree: Any, scope: dict[str, str]) -> Node:
        # The grammar wraps every operand in one rule per precedence level: skip them.
        while isinstance(tree, lark.Tree) and tree.data in _PASSTHROUGH and len(tree.children) == 1:
            tree = tree.children[0]
        if isinstance(tree, lark.Token):
            raise Unsupported(f"token {tree.type}")
        method = getattr(self, "r_" + str(tree.data), None)
        if method is None:
            raise Unsupported(str(tree.data).replace("_", " "))
        node: Node = method(tree.children, scope)
        return node

    def passthrough(self, children: list[Any], scope: dict[str, str]) -> Node:
        if len(children) != 1:
            raise Unsupported("unexpected shape")
        return self.walk(children[0], scope)

    r_member = r_primary = r_paren_expr = passthrough

    # -- logic ---------------------------------------------------------------------------------

    def r_expr(self, children: list[Any], scope: dict[str, str]) -> Node:
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
            assert isinstance(c, Vec)
            return where(c, af(f, e), bf(f, e))

        rng = None
        if a.rng and b.rng:
            rng = (min(a.rng[0], b.rng[0]), max(a.rng[1], b.rng[1]))
        return Node(a.kind, ternary, cond.scalar and a.scalar and b.scalar, rng)

    def _logic(self, children: list[Any], scope: dict[str, str], combine: Callable) -> Node:
        if len(children) == 1:
            return self.walk(children[0], scope)
        a, b = (self.walk(c, scope) for c in children)
        if a.kind != "bool" or b.kind != "bool":
            raise Unsupported("logic on non-booleans")
        af, bf = a.fn, b.fn
        assert af and bf
        return Node("bool", lambda f, e: combine(af(f, e), bf(f, e)), a.scalar and b.scalar)

    def r_conditionalor(self, children: list[Any], scope: dict[str, str]) -> Node:
        return self._logic(children, scope, cel_or)

    def r_conditionaland(self, children: list[Any], scope: dict[str, str]) -> Node:
        return self._logic(children, scope, cel_and)

    # -- relations -----------------------------------------------------------------------------

    def r_relation(self, children: list[Any], scope: dict[str, str]) -> Node:
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
        return Node("bool", lambda f, e: compare(op, af(f, e), bf(f, e)), a.scalar and b.scalar)

    def _in(self, a: Node, b: Node) -> Node:
        af = a.fn
        assert af
        if b.kind == "list":
            if a.kind != "string":
                raise Unsupported("`in` of a non-string in a list attribute")
            name = b.attr
            assert name

            def in_list_attr(f: Frame, e: Env) -> Value:
                x = af(f, e)
                assert isinstance(x, Strs)
                counts = f.list_counts(name)
                s = x.scalar()
                if s is not None:
                    col = counts.get(s)
                    data = np.zeros(f.n, bool) if col is None else col > 0
                    return Vec(data, x.err)
                data = np.zeros(f.n, bool)
                for member, col in counts.items():
                    is_member = str_table(x, member.__eq__, bool)
                    data |= is_member & (col > 0)
                return Vec(data, x.err)

            return Node("bool", in_list_attr)
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
                    assert isinstance(x, Strs)
                    wanted = set()
                    for fn in fns:
                        s = fn(f, e)  # type: ignore[misc]
                        assert isinstance(s, Strs)
                        wanted.add(s.scalar())
                    return Vec(str_table(x, wanted.__contains__, bool), x.err)

                return Node("bool", in_strings, a.scalar)

            def in_items(f: Frame, e: Env) -> Value:
                x = af(f, e)
                data: Any = np.bool_(False)
                errs = [x.err]
                for fn in fns:
                    item = fn(f, e)  # type: ignore[misc]
                    errs.append(item.err)
                    data = np.logical_or(data, compare("relation_eq", x, item).data)
                return Vec(data, err_or(*errs))

            return Node("bool", in_items, a.scalar and all(i.scalar for i in b.items))
        raise Unsupported(f"`in` on {b.kind}")

    # -- arithmetic ----------------------------------------------------------------------------

    def r_addition(self, children: list[Any], scope: dict[str, str]) -> Node:
        return self._arith(children, scope)

    def r_multiplication(self, children: list[Any], scope: dict[str, str]) -> Node:
        return self._arith(children, scope)

    def _arith(self, children: list[Any], scope: dict[str, str]) -> Node:
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
                x, y = as_vec(af(f, e)), as_vec(bf(f, e))
                with np.errstate(all="ignore"):
                    return Vec(ufunc(x.data, y.data), err_or(x.err, y.err))

            return Node("double", double_op, scalar)
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
                x, y = as_vec(af(f, e)), as_vec(bf(f, e))
                errs = [x.err, y.err]
                divisor = y.data
                if may_be_zero:
                    zero = np.equal(divisor, 0)
                    errs.append(zero)
                    divisor = np.where(zero, 1, divisor)
                rem = np.fmod(x.data, divisor)  # C semantics: the sign of the dividend
                data = (x.data - rem) // divisor if is_div else rem
                return Vec(data, err_or(*errs))

            return Node("int", int_div, scalar, rng)

        def int_op(f: Frame, e: Env) -> Value:
            x, y = as_vec(af(f, e)), as_vec(bf(f, e))
            return Vec(ufunc(x.data, y.data), err_or(x.err, y.err))

        return Node("int", int_op, scalar, rng)

    def _concat(self, a: Node, b: Node) -> Node:
        af, bf = a.fn, b.fn
        assert af and bf
        if not (a.scalar or b.scalar):
            raise Unsupported("concatenation of two string attributes")

        def concat(f: Frame, e: Env) -> Value:
            x, y = af(f, e), bf(f, e)
            assert isinstance(x, Strs) and isinstance(y, Strs)
            err = err_or(x.err, y.err)
            t = y.scalar()
            if t is not None:
                return Strs(x.codes, [s + t for s in x.table], err)
            s = x.scalar()
            assert s is not None
            return Strs(y.codes, [s + u for u in y.table], err)

        return Node("string", concat, a.scalar and b.scalar)

    def r_unary(self, children: list[Any], scope: dict[str, str]) -> Node:
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
                x = as_vec(af(f, e))
                return Vec(np.logical_not(x.data), x.err)

            return Node("bool", negate, a.scalar)
        if a.kind == "int":
            assert a.rng
            rng = _checked_range(-a.rng[1], -a.rng[0])
        elif a.kind == "double":
            rng = None
        else:
            raise Unsupported(f"- on {a.kind}")

        def minus(f: Frame, e: Env) -> Value:
            x = as_vec(af(f, e))
            return Vec(np.negative(x.data), x.err)

        return Node(a.kind, minus, a.scalar, rng)

    # -- leaves --------------------------------------------------------------------------------

    def r_literal(self, children: list[Any], scope: dict[str, str]) -> Node:
        return _literal(children[0])

    def r_ident(self, children: list[Any], scope: dict[str, str]) -> Node:
        name = str(children[0])
        if name in scope:
            # A macro's bound variable: always a string (lists hold strings), a constant.
            def bound(f: Frame, e: Env) -> Value:
                return e[name]

            return Node("string", bound, True)
        kind = self.attributes.get(name)
        if kind is None:
            raise Unsupported(f"unknown name {name}")
        self.deps.add(name)
        if kind == "proficiency":
            return Node("int", lambda f, e: Vec(f.column(name)), rng=PROFICIENCY_RANGE)
        if kind == "number":
            return Node("double", lambda f, e: Vec(f.column(name)))
        if kind == "boolean":
            return Node("bool", lambda f, e: Vec(f.column(name)))
        if kind == "string":

            def string(f: Frame, e: Env) -> Value:
                codes, table = f.strings(name)
                return Strs(codes, table)

            return Node("string", string)
        if kind == "list":
            return Node("list", attr=name)
        raise Unsupported(f"attribute type {kind}")

    def r_list_lit(self, children: list[Any], scope: dict[str, str]) -> Node:
        if not children:
            return Node("lits", scalar=True)
        items = tuple(self.walk(c, scope) for c in children[0].children)
        if any(i.kind in ("list", "lits") for i in items):
            raise Unsupported("nested lists")
        return Node("lits", scalar=all(i.scalar for i in items), items=items)

    # -- calls ---------------------------------------------------------------------------------

    def r_ident_arg(self, children: list[Any], scope: dict[str, str]) -> Node:
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
                x = as_vec(af(f, e))
                return Vec(np.asarray(x.data, dtype=np.float64), x.err)

            return Node("double", to_double, a.scalar)
        raise Unsupported(f"function {name}")

    def _size(self, a: Node) -> Node:
        if a.kind == "list":
            name = a.attr
            assert name
            return Node("int", lambda f, e: Vec(f.list_size(name)), rng=_SIZE_RANGE)
        if a.kind == "lits":
            n = np.int64(len(a.items))
            return Node("int", lambda f, e: Vec(n), True, (len(a.items), len(a.items)))
        if a.kind == "string":
            af = a.fn
            assert af

            def str_size(f: Frame, e: Env) -> Value:
                x = af(f, e)
                assert isinstance(x, Strs)
                return Vec(str_table(x, len, np.int64), x.err)

            return Node("int", str_size, a.scalar, _SIZE_RANGE)
        raise Unsupported(f"size() of {a.kind}")

    def r_member_dot_arg(self, children: list[Any], scope: dict[str, str]) -> Node:
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
                assert isinstance(x, Strs) and isinstance(y, Strs)
                s = y.scalar()
                assert s is not None
                tested = str_table(x, lambda v: test(v, s), bool)
                return Vec(tested, err_or(x.err, y.err))

            return Node("bool", string_test, receiver.scalar)
        raise Unsupported(f"method {method_token}")

    def _macro(self, name: str, receiver_tree: Any, args: list[Any], scope: dict[str, str]) -> Node:
        receiver = self.walk(receiver_tree, scope)
        if receiver.kind != "list" or len(args) != 2:
            raise Unsupported(f"{name} over {receiver.kind}")
        var = self.walk_ident_name(args[0])
        pred = self.walk(args[1], {**scope, var: "string"})
        if pred.kind != "bool":
            raise Unsupported(f"{name} predicate is {pred.kind}")
        attr, pf = receiver.attr, pred.fn
        assert attr and pf

        def members(f: Frame, e: Env) -> Iterable[tuple[Any, Vec]]:
            """(present in each row, predicate for that member) for every list member."""
            for member, counts in f.list_counts(attr).items():
                p = pf(f, {**e, var: Strs(np.intp(0), [member])})
                assert isinstance(p, Vec)
                yield counts, p

        if name == "exists":

            def exists(f: Frame, e: Env) -> Value:
                acc = Vec(np.bool_(False))
                for counts, p in members(f, e):
                    present = counts > 0
                    hit = np.logical_and(present, p.data)
                    err = None if p.err is None else np.logical_and(present, p.err)
                    acc = cel_or(acc, Vec(hit, err))
                return acc

            return Node("bool", exists)
        if name == "all":

            def all_(f: Frame, e: Env) -> Value:
                acc = Vec(np.bool_(True))
                for counts, p in members(f, e):
                    present = counts > 0
                    ok = np.logical_or(np.logical_not(present), p.data)
                    err = None if p.err is None else np.logical_and(present, p.err)
                    acc = cel_and(acc, Vec(ok, err))
                return acc

            return Node("bool", all_)

        def exists_one(f: Frame, e: Env) -> Value:
            count: Any = np.int64(0)
            errs = []
            for counts, p in members(f, e):
                hit = p.data if p.err is None else np.logical_and(p.data, np.logical_not(p.err))
                count = count + counts.astype(np.int64) * hit
                if p.err is not None:
                    errs.append(np.logical_and(counts > 0, p.err))
            return Vec(np.equal(count, 1), err_or(*errs))

        return Node("bool", exists_one)

    def walk_ident_name(self, tree: Any) -> str:
        """The bound variable of a macro: an expression that is just an identifier."""
        while isinstance(tree, lark.Tree) and tree.data != "ident":
            if len(tree.children) != 1:
                raise Unsupported("macro variable is not a name")
            tree = tree.children[0]
        if not isinstance(tree, lark.Tree):
            raise Unsupported("macro variable is not a name")
        return str(tree.children[0])
