"""YAML in and out, strict and fast.

Reading builds plain data straight from libyaml's event stream (not PyYAML's node graph and
constructors, which cost ~30 µs per node) and resolves plain scalars by the YAML 1.2 core
schema: only ``true``/``false`` are booleans (``no`` and ``on`` stay text), dates stay text,
``0o17``/``0x1F`` are integers. Duplicate mapping keys are errors with their path and line,
never silent overwrites; merge keys and custom tags are refused.

Writing emits events too, quoting every string that a YAML 1.1 or 1.2 reader could take for
something else, so exported files read back identically here and in other YAML tools.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

from expertline.errors import Problem, clip
from expertline.limits import MAX_NESTING

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

_NULL = re.compile(r"^(?:~|null|Null|NULL)?$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_STD = "tag:yaml.org,2002:"
_MAX_CONTAINERS = 5_000_000


def deep_problem(path: list[str | int], line: int | None = None) -> Problem:
    """Nesting beyond ``MAX_NESTING`` at ``path`` (shown by its first levels only)."""
    shown = format_path(path[:4]) + ("…" if len(path) > 4 else "")
    where = f" (line {line})" if line else ""
    return Problem(shown, f"nested more than {MAX_NESTING} levels deep{where}")


class _Stop(Exception):
    """The stream cannot be read further (syntax error); the problem is already recorded."""


def format_path(parts: Iterable[str | int]) -> str:
    """``("queues", 2, "select")`` -> ``queues[2].select``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif len(part) > _LONG_KEY:
            out += f"[{clip(part)}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


_LONG_KEY = 64


_NOT_TEXT_FIRST = frozenset("-+.0123456789~nNtTfF")


def resolve_plain(text: str) -> Any:
    """A plain (unquoted) scalar by the YAML 1.2 core schema."""
    if text[:1] not in _NOT_TEXT_FIRST:
        return text if text else None
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if _OCT.match(text):
        return int(text[2:], 8)
    if _HEX.match(text):
        return int(text[2:], 16)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


def parse_yaml(text: str) -> tuple[Any, list[Problem]]:
    """YAML text -> (plain data, problems). Data is None when the text cannot be read at all."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        data = _json_fast_path(stripped)
        if data is not None:
            return data, []
    reader = _Reader(text)
    try:
        data = reader.read()
    except _Stop:
        return None, reader.problems
    return data, reader.problems


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def _json_fast_path(text: str) -> Any:
    """JSON is YAML too: read it with the JSON parser (fast); None -> use the YAML reader,
    which reports problems (duplicate keys, syntax) with paths and lines."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, _DuplicateKey, RecursionError):
        return None


class _Reader:
    """Builds data from libyaml events; the current path is a stack, rendered only on errors."""

    def __init__(self, text: str) -> None:
        self._loader = _Loader(text)
        self._get = self._loader.get_event
        self._anchors: dict[str, Any] = {}
        self._count = 0
        self._depth = 0
        self._path: list[str | int] = []
        self.problems: list[Problem] = []

    def read(self) -> Any:
        try:
            return self._document()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            self.problems.append(Problem("", f"not valid YAML: {where}{problem}"))
            raise _Stop from exc
        finally:
            self._loader.dispose()

    def _problem(self, event: Event, message: str, key: str | None = None) -> None:
        line = _line(event)
        path = self._path if key is None else [*self._path, key]
        self.problems.append(Problem(format_path(path), f"{message} (line {line})"))

    def _document(self) -> Any:
        get = self._get
        assert type(get()) is StreamStartEvent
        event = get()
        if type(event) is StreamEndEvent:
            self.problems.append(Problem("", "the document is empty"))
            return None
        assert type(event) is DocumentStartEvent
        data = self.node(get())
        assert type(get()) is DocumentEndEvent
        event = get()
        if type(event) is not StreamEndEvent:
            self._problem(event, "only one YAML document is allowed")
            raise _Stop
        return data

    def node(self, event: Any) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            if event.tag is None:
                value = resolve_plain(event.value) if event.implicit[0] else event.value
            else:
                value = self.scalar(event)
        elif kind is MappingStartEvent:
            self._grow(event)
            if event.tag is not None:
                self._tag(event, "map")
            value = self.mapping()
            self._depth -= 1
        elif kind is SequenceStartEvent:
            self._grow(event)
            if event.tag is not None:
                self._tag(event, "seq")
            value = self.sequence()
            self._depth -= 1
        elif kind is AliasEvent:
            if event.anchor not in self._anchors:
                self._problem(event, f"unknown alias *{event.anchor}")
                return None
            return self._anchors[event.anchor]
        else:  # pragma: no cover - libyaml yields only the events above here
            self._problem(event, "unexpected YAML event")
            raise _Stop
        if event.anchor:
            self._anchors[event.anchor] = value
        return value

    def _grow(self, event: Event) -> None:
        self._count += 1
        if self._count > _MAX_CONTAINERS:
            self._problem(event, "the document is too large")
            raise _Stop
        self._depth += 1
        if self._depth > MAX_NESTING:  # no configuration needs it; deeper would recurse on
            self.problems.append(deep_problem(self._path, _line(event)))
            raise _Stop

    def _tag(self, event: Any, kind: str) -> None:
        if event.tag not in ("!", _STD + kind):
            self._problem(event, f"YAML tag {event.tag} is not supported")

    def scalar(self, event: Any) -> Any:
        tag = event.tag
        value = event.value
        if tag == "!":
            return value
        try:
            if tag == _STD + "str":
                return value
            if tag == _STD + "int":
                return int(value, 0)
            if tag == _STD + "float":
                return float(value)
            if tag == _STD + "bool" and value in _BOOL:
                return _BOOL[value]
            if tag == _STD + "null":
                return None
        except ValueError:
            self._problem(event, f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return value
        self._problem(event, f"YAML tag {tag} is not supported")
        return value

    def sequence(self) -> list[Any]:
        get = self._get
        path = self._path
        out: list[Any] = []
        i = 0
        while type(event := get()) is not SequenceEndEvent:
            path.append(i)
            out.append(self.node(event))
            path.pop()
            i += 1
        return out

    def mapping(self) -> dict[str, Any]:
        get = self._get
        path = self._path
        out: dict[str, Any] = {}
        first: dict[str, Event] = {}
        while type(key_event := get()) is not MappingEndEvent:
            if type(key_event) is not ScalarEvent:
                self._problem(key_event, "mapping keys must be plain text")
                self.node(key_event)
                self.node(get())
                continue
            key = key_event.value
            value_event = get()
            if key in first or (key == "<<" and key_event.implicit[0]):
                if key == "<<":
                    self._problem(key_event, "merge keys (<<) are not supported")
                else:
                    self.problems.append(
                        Problem(
                            format_path([*path, key]),
                            f"duplicate key at line {_line(key_event)} "
                            f"(first at line {_line(first[key])})",
                        )
                    )
                path.append(key)
                self.node(value_event)
                path.pop()
                continue
            first[key] = key_event
            path.append(key)
            out[key] = self.node(value_event)
            path.pop()
        return out


# --- locating problems -------------------------------------------------------------------------

_PATH_PART = re.compile(r"\[(\d+)\]|\[(['\"])(.*?)\2\]|\.?([^.\[\]]+)")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``queues[2].select`` -> ``("queues", 2, "select")`` (the inverse of ``format_path``)."""
    parts: list[str | int] = []
    for index, _, quoted, plain in _PATH_PART.findall(path):
        if index:
            parts.append(int(index))
        else:
            parts.append(quoted or plain)
    return tuple(parts)


class _Locator(_Reader):
    """A reader that notes the line where each wanted path (or a prefix of it) starts."""

    def __init__(self, text: str, wanted: set[tuple[str | int, ...]]) -> None:
        super().__init__(text)
        self.wanted = wanted
        self.lines: dict[tuple[str | int, ...], int] = {}

    def node(self, event: Any) -> Any:
        key = tuple(self._path)
        if key in self.wanted and event.start_mark is not None:
            self.lines.setdefault(key, event.start_mark.line + 1)
        return super().node(event)


def locate(text: str, paths: Iterable[str]) -> dict[str, int]:
    """Line numbers for problem paths: the line of the path, or of its deepest existing parent.

    Costs one more parse, so it is meant for error reports, not for the success path.
    """
    targets = {path: parse_path(path) for path in paths if path}
    wanted = {t[:n] for t in targets.values() for n in range(1, len(t) + 1)}
    locator = _Locator(text, wanted)
    try:
        locator.read()
    except _Stop:
        return {}
    out = {}
    for path, parts in targets.items():
        for n in range(len(parts), 0, -1):
            line = locator.lines.get(parts[:n])
            if line is not None:
                out[path] = line
                break
    return out


# --- writing ------------------------------------------------------------------------------------

_Y11 = yaml.resolver.Resolver.yaml_implicit_resolvers
_PLAIN_SAFE = re.compile(r"\w[\w.@/+=:()',!?&*%-]*(?: [\w.@/+=:()',!?&*%-]+)*")


def _needs_quotes(text: str) -> bool:
    """Would a YAML 1.1 or 1.2 reader take this plain text for anything but that string?"""
    if not _PLAIN_SAFE.fullmatch(text) or text.endswith(":") or ": " in text:
        return True
    if not isinstance(resolve_plain(text), str):
        return True
    return any(tag != _STD + "str" and regex.match(text) for tag, regex in _Y11.get(text[:1], ()))


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "." not in text:  # 1.0 and 1.0e+20: a YAML 1.1 reader needs the dot too
            text = text.replace("e", ".0e") if "e" in text else text + ".0"
        return text
    return _text_scalar(str(value))


@functools.lru_cache(maxsize=65536)
def _text_scalar(text: str) -> str:
    """Cached: keys and common values repeat on every object of an export."""
    if not _needs_quotes(text):
        return text
    # A JSON string is a YAML double-quoted scalar once the characters YAML does not allow
    # raw (or reads as line breaks) are escaped too.
    return _YAML_ESCAPE.sub(_escape, json.dumps(text, ensure_ascii=False))


_YAML_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _write(value: Any, indent: str, out: list[str]) -> None:
    """Block style; ``out`` receives the lines of a mapping or sequence body."""
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{indent}{_scalar(str(key))}:"
            if isinstance(item, dict | list) and item:
                out.append(head)
                _write(item, indent + ("  " if isinstance(item, dict) else ""), out)
            else:
                out.append(f"{head} {_empty_or_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, dict) and item:
                inner: list[str] = []
                _write(item, indent + "  ", inner)
                inner[0] = f"{indent}- {inner[0][len(indent) + 2 :]}"
                out.extend(inner)
            elif isinstance(item, list) and item:
                inner = []
                _write(item, indent + "  ", inner)
                inner[0] = f"{indent}- {inner[0][len(indent) + 2 :]}"
                out.extend(inner)
            else:
                out.append(f"{indent}- {_empty_or_scalar(item)}")


def _empty_or_scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def dump_yaml(data: Any) -> str:
    """Plain data (mappings, lists, scalars) -> block-style YAML text, deterministic."""
    if not isinstance(data, dict | list) or not data:
        return _empty_or_scalar(data) + "\n"
    out: list[str] = []
    _write(data, "", out)
    return "\n".join(out) + "\n"


def _line(event: Event) -> int:
    """The 1-based line where ``event`` starts (0 if the parser gave no position)."""
    return event.start_mark.line + 1 if event.start_mark else 0
