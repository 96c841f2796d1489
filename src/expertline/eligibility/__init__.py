"""Which experts match each queue's selection: CEL evaluated column-wise, kept up to date.

A queue's ``select`` (and each escalation step's) is a CEL expression over the expert's
attributes. Evaluating it expert by expert with ``cel-expr-python`` costs ~10 µs, so 100,000
experts x 2,000 selections would take half an hour. Instead each selection is parsed with
cel-python's grammar and the common subset is compiled into numpy operations over one column
per attribute: a selection then costs a few array operations for all experts at once.

Everything else falls back to exact per-expert evaluation with ``cel-expr-python`` (logged,
with the reason). Semantics are CEL's: expressions are type-checked by ``cel-expr-python``
first (so ``int`` never meets ``double``), integer division truncates and fails on zero,
integer overflow is excluded by interval analysis (or the selection falls back), ``&&``/``||``
absorb errors the way CEL does, and an expert for whom a selection errors does not match.

The same compiled forms run on a single row for incremental updates, so one expert changing
costs one row's evaluation of the selections that read the changed attributes, never a
rebuild.

- ``values``: column values and CEL's operators over them (errors included).
- ``compiler``: CEL syntax tree -> numpy operations, or ``Unsupported`` with the reason.
- ``selection``: one selection text, type-checked and compiled (``compile_selection``).
- ``columns``: the column store of every expert's attribute values.
- ``index``: ``EligibilityIndex``, the match sets of every queue and step, kept current.
- ``build``: a validated document -> the routing core's frozen view (``build_routing_config``).
"""

from expertline.eligibility.index import (
    AttributeDecl,
    EligibilityIndex,
    ExpertChange,
    QueueChange,
)
from expertline.eligibility.selection import CompiledSelection, compile_selection, warm_up

__all__ = [
    "AttributeDecl",
    "CompiledSelection",
    "EligibilityIndex",
    "ExpertChange",
    "QueueChange",
    "compile_selection",
    "warm_up",
]
