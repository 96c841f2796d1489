"""What every section's models share: the strict base model and the common field types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"

ObjectId = Annotated[str, Field(pattern=ID_PATTERN, description="Letters, digits, _.@+- .")]
EnvName = Annotated[str, Field(pattern=ENV_PATTERN, description="Name of an environment variable.")]
Locale = Annotated[str, Field(pattern=LOCALE_PATTERN, description="A locale tag: en, es, pt-BR.")]


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, fields go by their names."""

    # One schema per model in OpenAPI (inputs and outputs have the same shape here).
    model_config = ConfigDict(
        extra="forbid", populate_by_name=False, json_schema_mode_override="validation"
    )
