"""The eligibility index: every (queue, escalation step)'s match set, kept current.

Experts' values live in the column store; each distinct selection text is compiled once and
kept as a bit mask over the store's rows. A changed expert costs one row's evaluation of the
selections that read the changed attributes; a changed queue, its new selections over all rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from expertline.config.cel import SelectionCompiler, SelectionError
from expertline.eligibility.columns import Columns, RowFrame
from expertline.eligibility.selection import CompiledSelection, compile_selection
from expertline.errors import InvalidInput, Problem

if TYPE_CHECKING:
    from expertline.config.schema import ConfigDocument

log = logging.getLogger(__name__)


class AttributeDecl(Protocol):
    """What the index needs of an attribute declaration (``config.schema.Attribute`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


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
        self._columns = Columns(self.attributes)
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
        frame = RowFrame(self.attributes, values)
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
