"""Canonical form of a configuration: the same document always exports to the same bytes.

Keys follow the schema's field order; values equal to their default are omitted (so an export
shows what was decided, not what is implied); durations use their canonical spelling. The
per-object bodies stored in the database are the same canonical dicts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from expertline.config.schema import SECTIONS, ConfigDocument
from expertline.config.yamlio import dump_yaml

HEADER = "# expertline configuration (canonical export)\n"


def object_body(obj: BaseModel) -> dict[str, Any]:
    """One object as canonical JSON-compatible data (defaults omitted)."""
    return obj.model_dump(mode="json", exclude_defaults=True)


def document_data(doc: ConfigDocument) -> dict[str, Any]:
    """The whole document as canonical data; empty sections are left out."""
    data: dict[str, Any] = {}
    for section in SECTIONS:
        if section == "messages":
            if doc.messages:
                data[section] = {
                    locale: object_body(texts) for locale, texts in doc.messages.items()
                }
            continue
        items = getattr(doc, section)
        if items:
            data[section] = [object_body(item) for item in items]
    return data


def export_yaml(doc: ConfigDocument) -> str:
    """Canonical YAML text; ``export -> import -> export`` is byte-identical."""
    data = document_data(doc)
    body = dump_yaml(data) if data else "{}\n"
    return HEADER + body
