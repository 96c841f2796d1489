"""One selection text, compiled: type-checked with cel-expr-python, then vectorized if it can be.

Parsing uses cel-python's grammar (``lark``); the vectorized form comes from ``compiler``.
A text outside the vectorized subset keeps its reason and the attributes it may read, and is
evaluated per expert with the checked ``cel-expr-python`` program, the reference semantics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import lark
import numpy as np
from celpy.celparser import CELParser

from expertline.config.cel import SelectionCompiler
from expertline.eligibility.compiler import Compiler, Node, Unsupported
from expertline.eligibility.values import Frame, Vec


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


@dataclass(slots=True)
class CompiledSelection:
    """One selection text: vectorized form, or why not; the checked CEL program on demand."""

    text: str
    node: Node | None
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
        assert isinstance(value, Vec)
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
    compiler = Compiler(attributes)
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
