"""Where record feeds go: the ``record_feeds`` setting (``EXPERTLINE_RECORD_FEEDS``, JSON).

Each target names the environment variable holding its HMAC secret (``secret_env``); the
secret itself is never in a settings file or the configuration.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from expertline.runtime.webhooks import callback_url_problem

RecordKind = Literal["rcd", "tcd"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MIN_SECRET_BYTES = 16


class RecordFeedTarget(BaseModel):
    """One receiver of the RCD/TCD feed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Names the cursor")
    url: str
    secret_env: str = Field(description="Environment variable holding the HMAC secret")
    kinds: tuple[RecordKind, ...] = ("rcd", "tcd")
    batch: int = Field(default=100, ge=1, le=1000, description="Records per delivery")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = callback_url_problem(value)
        if problem:
            raise ValueError(f"url {problem}")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("secret_env must be the name of an environment variable")
        return value

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: tuple[RecordKind, ...]) -> tuple[RecordKind, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("kinds must list rcd and/or tcd, each once")
        return value

    def secret(self) -> bytes:
        """The HMAC secret from the environment; ValueError saying what is missing."""
        value = os.environ.get(self.secret_env, "")
        if not value:
            raise ValueError(
                f"record feed {self.id!r}: environment variable {self.secret_env} "
                "(its HMAC secret) is not set"
            )
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"record feed {self.id!r}: the secret in {self.secret_env} is shorter "
                f"than {MIN_SECRET_BYTES} bytes"
            )
        return value.encode()


def check_unique(targets: list[RecordFeedTarget]) -> list[RecordFeedTarget]:
    ids = [t.id for t in targets]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"record feed ids must be unique: {', '.join(duplicated)}")
    return targets
