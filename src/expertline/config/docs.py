"""Generates ``docs/configuration.md`` from the schema, so the reference cannot drift from it.

``python -m expertline.config.docs`` rewrites the file; a test fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from expertline.config.cel import CEL_TYPES
from expertline.config.schema import (
    ATTRIBUTE_DEFAULTS,
    DEFAULT_MESSAGES,
    Attribute,
    ConfigDocument,
    EntryPoint,
    Escalation,
    Expert,
    MessageSet,
    PresenceSource,
    Queue,
    StatusMap,
    XmppComponent,
)

DOC_PATH = Path("docs") / "configuration.md"

_SECTIONS: list[tuple[str, str, type[BaseModel], str]] = [
    (
        "attributes",
        "Attributes",
        Attribute,
        "What experts are matched on. Each attribute is a "
        "typed variable in the queues' CEL selections.",
    ),
    ("experts", "Experts", Expert, "Employees reachable by IM and phone."),
    (
        "queues",
        "Queues",
        Queue,
        "Assignment queues: which experts qualify (`select`) and how "
        "offers go out. Only `id`, `name` and `select` are required.",
    ),
    (
        "queues[].escalate[]",
        "Escalation steps",
        Escalation,
        "A wider selection once the task "
        "has waited `after` in the queue. Steps apply in increasing `after` order.",
    ),
    (
        "entry_points",
        "Entry points",
        EntryPoint,
        "Map a dialed number (or any route key) to a queue.",
    ),
    (
        "presence",
        "Presence sources",
        PresenceSource,
        "Connections to an IM/presence system. "
        "Account mode logs in as a user (`jid` + `password_env`) and subscribes to each expert's "
        "presence; component mode (XEP-0114) uses `component` instead.",
    ),
    ("presence[].component", "XMPP component", XmppComponent, "Component mode settings."),
    (
        "presence[].status_map",
        "Status map",
        StatusMap,
        "Which IM presence values mean "
        "available, away or dnd (`online` is a contact with no `<show/>`). Unlisted values count "
        "as away; an unavailable contact is offline.",
    ),
    (
        "messages.<locale>",
        "Message sets",
        MessageSet,
        "IM texts per locale. Every text is "
        "optional: unset texts fall back to the built-in text of the locale, then to English.",
    ),
]


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop:
        kinds = [_type(p, defs) for p in prop["anyOf"] if p.get("type") != "null"]
        if prop.get("description", "").startswith("A duration"):
            return "duration"
        return " \\| ".join(dict.fromkeys(kinds))
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object":
        if "properties" in prop:
            return "mapping"
        values = prop.get("additionalProperties")
        if not isinstance(values, dict) and prop.get("patternProperties"):
            values = next(iter(prop["patternProperties"].values()))
        inner = _type(values, defs) if isinstance(values, dict) else "any"
        return f"mapping of key → {inner}"
    if kind == "string" and str(prop.get("pattern", "")).startswith(r"^(\d+h)?"):
        return "duration"
    return {"string": "text", "integer": "integer", "number": "number", "boolean": "boolean"}.get(
        str(kind), "any"
    )


def _range(prop: dict[str, Any]) -> str:
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        return f" ({low}..{high})"
    if low is not None:
        return f" (≥ {low})"
    return ""


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        return f"`{dumped}`" if isinstance(dumped, str) else "see below"
    if isinstance(value, float) and name not in ("number",):
        from expertline.config.schema import format_duration

        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ([], {}):
        return "none"
    return f"`{value}`"


def _table(model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    props = schema.get("properties", {})
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        prop = props.get(name, {})
        desc = (field.description or prop.get("description") or "").replace("|", "\\|")
        desc = " ".join(desc.split())
        kind = _type(prop, defs) + _range(prop)
        lines.append(f"| `{name}` | {kind} | {_default(model, name)} | {desc} |")
    return lines


def render() -> str:
    """The whole reference page."""
    out: list[str] = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m expertline.config.docs` from "
        "src/expertline/config/schema/; do not edit by hand. -->",
        "",
        "One YAML document describes a whole configuration. `expertline config import FILE` "
        "applies it atomically (all or nothing), `expertline config validate FILE` checks it "
        "without applying, `expertline config export` prints the applied configuration back in "
        "canonical form. The same objects have REST CRUD under `/api/v1/` (see below). Every "
        "applied change makes a new configuration version; `expertline config history` and "
        "`GET /api/v1/config/history` show when, by whom (`cli:<user>` or `token:<name>`) and "
        "what changed. An example: [examples/demo.yaml](../examples/demo.yaml).",
        "",
        "## Document",
        "",
        "Top-level sections, all optional (an absent section is empty):",
        "",
        *_table(ConfigDocument),
        "",
        "Unknown keys anywhere are errors. Mapping keys must be unique (a repeated key is an "
        "error, never a silent overwrite). Values follow YAML 1.2: only `true`/`false` are "
        "booleans (`yes`, `no`, `on` are text), dates stay text. Quote phone numbers such as "
        '`"+18005550100"` (unquoted, they are numbers). Types are strict: a whole number is '
        'never written as text or a boolean (`priority: "5"` and `priority: true` are errors, '
        "not 5 and 1), `true`/`false` are the only booleans of `may_decline` and `enabled`, "
        "and numbers must be finite (`.inf` and `.nan` are refused with their path). Objects "
        "and lists nest at most 64 levels; an error shows a long value by its first 40 "
        "characters and its size. Anchors and aliases work; merge keys "
        "(`<<`) and custom tags are refused.",
        "",
        "## Durations",
        "",
        "Durations are written `20s`, `5m`, `1h`, `1h30m`, `500ms` (units from largest to "
        "smallest, each at most once) or as a plain number of seconds. Export prints the "
        "canonical form: `90s` becomes `1m30s`.",
        "",
    ]
    for where, title, model, intro in _SECTIONS:
        out += [f"## {title} (`{where}`)", "", intro, "", *_table(model), ""]
        if model is Attribute:
            out += [
                "An expert who does not list an attribute has its default value; selections "
                "see every declared attribute. In CEL each type is:",
                "",
                "| type | expert value | default when absent | CEL type |",
                "|---|---|---|---|",
            ]
            values = {
                "proficiency": "integer 1..100",
                "boolean": "`true` / `false`",
                "list": "list of members of `values`",
                "number": "any number",
                "string": "text",
            }
            for kind, cel_type in CEL_TYPES.items():
                default = ATTRIBUTE_DEFAULTS[kind]
                shown = str(default).lower() if isinstance(default, bool) else repr(default)
                out.append(f"| `{kind}` | {values[kind]} | `{shown}` | `{_cel_name(cel_type)}` |")
            out.append("")
        if model is Queue:
            out += [
                "`select` and every `escalate[].select` are CEL expressions that must "
                "type-check against the declared attributes and be boolean, for example "
                "`billing >= 50 && 'es' in language`. CEL is strict about numbers: compare "
                "`number` attributes with decimals (`seniority > 3.0`), `proficiency` with "
                "integers (`billing >= 50`). Selections are evaluated when the configuration "
                "or an expert's attributes change, not per task.",
                "",
                "`on_max_wait` is `reject` (the routing client is told no expert is available), "
                "`{overflow: QUEUE}` (the same task moves to another queue; overflow chains "
                "must not loop) or `{label: LABEL}` (route to a fallback label).",
                "",
                "Orders: `longest_idle` (default), `most_skilled` (highest `skill` first; "
                "`skill` required), `least_busy`, `round_robin`, `random`, `closest_match` "
                "(smallest distance between the task's numeric attributes and the expert's "
                "attributes of the same names).",
                "",
            ]
        if model is MessageSet:
            out += [
                "Placeholders per text, and the built-in English text:",
                "",
                "| key | placeholders | built-in (en) |",
                "|---|---|---|",
            ]
            for key, names in MessageSet.PLACEHOLDERS.items():
                shown = ", ".join(f"`{{{n}}}`" for n in sorted(names)) or "—"
                text = DEFAULT_MESSAGES["en"][key].replace("|", "\\|")
                out.append(f"| `{key}` | {shown} | {text} |")
            out += [
                "",
                f"Built-in locales: {', '.join(f'`{k}`' for k in DEFAULT_MESSAGES)}. A literal "
                "brace is written `{{` or `}}`.",
                "",
            ]
    out += [
        "## Validation",
        "",
        "Validation lists every problem at once, each with its YAML path (and, for YAML "
        "input, its line in the file), and applies nothing when there is any:",
        "",
        "```",
        "error: demo.yaml: 3 problems; nothing was applied",
        "  experts[0].attributes.billing: proficiency 800 is out of range 1..100 (line 22)",
        "  queues[1].select: column 9: found no matching overload for '_>=_' applied to "
        "'(int, string)' (line 73)",
        "  entry_points[1].queue: no such queue (known: billing-es, billing-any, "
        "network-escalations) (line 95)",
        "```",
        "",
        "The REST API returns the same problems as "
        '`{"error": {"code": "invalid", "message": ..., "details": [{"path", "message"}]}}` '
        "with status 422.",
        "",
        "One pass finds them all: an object with a problem of its own (a bad field, an "
        "unknown key) is still checked with the rest of the document as far as it can be "
        "read, so its id still counts for duplicates, its references and attribute values "
        "and its selections are still checked, and a field that failed is not reported a "
        "second time. A REST body with problems of its own gets, in the same answer, what it "
        "would leave wrong in the configuration: its own problems by their path in the body "
        "(`colour`), the others by their path in the document (`queues[3].select`). The "
        "admin pages check a form the same way as it is typed.",
        "",
        "Checked: YAML syntax and duplicate keys; unknown keys; types, ranges and formats of "
        "every field; duplicate ids (attribute names, expert ids, expert IM addresses, queue "
        "ids, entry point numbers, presence source ids); references (queue `skill` → numeric "
        "attribute, overflow → queue, entry point → queue, expert attribute names → declared "
        "attributes, expert `presence_source` → presence source); expert attribute values "
        "against their attribute's type (list members must be among `values`); CEL syntax, "
        "types and boolean result; message placeholders. Secrets never appear in the "
        "document: only the names of the environment variables that hold them "
        "(`password_env`, `secret_env`).",
        "",
        "## Export",
        "",
        "`expertline config export` writes canonical YAML: sections and keys in the order of "
        "this reference, values equal to their default omitted, durations in canonical "
        "form. Exporting, importing the export and exporting again gives the same bytes. "
        "Reordering objects does not create a version by itself.",
        "",
        "## REST API",
        "",
        "Admin tokens may write; admin and reporting tokens may read. Every response carries "
        "the applied version in `X-Config-Version`. Errors are "
        '`{"error": {"code", "message", "details": [{"path", "message"}]}}`: 401 without a '
        "valid token, 403 for a role that may not, 404 for an unknown id, 409 when creating "
        "an id that exists, 422 for invalid input or a change that would leave the "
        "configuration invalid (for example deleting a queue an entry point uses).",
        "",
        "| resource | id |",
        "|---|---|",
        "| `/api/v1/attributes` | `name` |",
        "| `/api/v1/experts` | `id` |",
        "| `/api/v1/queues` | `id` |",
        "| `/api/v1/entry-points` | `dialed_number` |",
        "| `/api/v1/presence-sources` | `id` |",
        "| `/api/v1/message-sets` | `locale` |",
        "",
        "Each has `GET` (list: `{items, total, version}`, with `offset`/`limit`), "
        "`GET /{id}`, `POST` (201), `PUT /{id}` (replace; the id cannot change) and "
        "`DELETE /{id}` (204). `GET /api/v1/config` returns the whole document as canonical "
        "JSON; `PUT /api/v1/config` replaces it atomically (JSON, or YAML with "
        "`Content-Type: application/yaml`). `GET /api/v1/config/history?limit=&before=` "
        "lists versions; `GET /api/v1/config/history/{version}` shows each object's change "
        "with its body before and after.",
        "",
    ]
    return "\n".join(out)


def _cel_name(kind: Any) -> str:
    name = getattr(kind, "name", None)
    text = name() if callable(name) else name
    return str(text or kind).lower()


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    target = root / DOC_PATH
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
