"""The ``attributes`` section: the typed properties experts are matched on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from expertline.config.schema.fields import StrictModel
from expertline.errors import clip

ATTRIBUTE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
AttributeType = Literal["proficiency", "boolean", "list", "number", "string"]

#: Words an attribute may not be named: its name is a variable in CEL selections.
CEL_RESERVED = frozenset(
    {
        *("true", "false", "null", "in", "as", "break", "const", "continue", "else", "for"),
        *("function", "if", "import", "let", "loop", "package", "namespace", "return"),
        *("var", "void", "while"),
    }
)

#: The value an expert has for an attribute he does not list.
ATTRIBUTE_DEFAULTS: dict[str, Any] = {
    "proficiency": 0,
    "boolean": False,
    "list": [],
    "number": 0.0,
    "string": "",
}


class Attribute(StrictModel):
    """A property experts are matched on; its name is a variable in queue selections."""

    name: str = Field(
        pattern=ATTRIBUTE_NAME_PATTERN,
        description="Variable name in CEL selections: letters, digits, underscore.",
    )
    type: AttributeType = Field(
        description="proficiency (integer 1..100), boolean, list (subset of `values`), "
        "number (any real number), string."
    )
    values: list[str] | None = Field(
        default=None,
        description="The allowed members of a `list` attribute (required for lists only).",
    )
    description: str | None = Field(default=None, description="Free text for administrators.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in CEL_RESERVED:
            raise ValueError(f"{clip(value)} is a reserved word in CEL")
        return value

    @model_validator(mode="after")
    def _values_for_lists(self) -> Attribute:
        if self.type == "list":
            if not self.values:
                raise ValueError("a list attribute needs `values` (its allowed members)")
            if len(set(self.values)) != len(self.values):
                raise ValueError("`values` has duplicates")
        elif self.values is not None:
            raise ValueError(f"`values` is only for list attributes, not {self.type}")
        return self

    def default_value(self) -> Any:
        """What an expert who does not list this attribute has."""
        value = ATTRIBUTE_DEFAULTS[self.type]
        return list(value) if isinstance(value, list) else value
