"""What the runtime schema and the reporting schema share, defined once: the names their
constraints and indexes get, and the type of their growing integer keys.

Each schema keeps its own ``MetaData`` (reporting may live in another database, with its own
Alembic chain); both name things the same way. The migrations spell their types out as they
were written and do not import these.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT autoincrement is only an alias of ROWID on SQLite when declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")
