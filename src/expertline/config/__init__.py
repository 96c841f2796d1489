"""The configuration domain: one YAML document describes attributes, experts, queues, entry
points, presence sources and IM texts.

- ``schema``: the pydantic models (the single source of truth for the format).
- ``yamlio``: strict YAML reading (duplicate keys are errors) and canonical writing.
- ``validate``: every problem at once, each with its YAML path (``validate_document``);
  ``problems``: one object's own problems, and what can still be read of it (``salvage``).
- ``cel``: type-checked CEL selections.
- ``store``: the store's entry point and per-object edits; ``documents``: whole documents
  (load, plan, atomic apply); ``versions``: versions and history.
- ``export``: canonical form; ``cli`` and ``http``: the command line and REST surfaces;
  ``docs``: generates docs/configuration.md.
"""
