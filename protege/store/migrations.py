"""Numbered schema migrations, applied in order when a store is opened.

A migration creates tables from their ``sa.Table`` declarations (the one
description of a table, also used for queries) and, for later changes, runs a
small function that alters only what an older database lacks. The store knows
only its own migrations; whoever opens it hands over the rest (``protege.database``
gathers every stage's). Append; never change what a shipped id does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from protege.store.schema import feedback, migrations_table, traces


@dataclass(frozen=True)
class Migration:
    id: int
    name: str
    # Created as declared today, indexes included: a database that lacked them
    # gets them whole, so a later migration that adds a column to one of them
    # must leave alone a table that already has it (see ``add_columns``).
    tables: tuple[sa.Table, ...] = ()
    func: Callable[[sa.Connection], None] | None = None


def add_columns(table: sa.Table, *names: str) -> Callable[[sa.Connection], None]:
    """A migration step adding ``table``'s declared columns ``names`` where the
    database lacks them (a table created after the column was declared has it)."""

    def add(conn: sa.Connection) -> None:
        have = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        for name in names:
            if name not in have:
                column = sa.schema.CreateColumn(table.c[name]).compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column}"))

    return add


MIGRATIONS: tuple[Migration, ...] = (Migration(1, "traces and feedback", (traces, feedback)),)


def migrate(engine: sa.Engine, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the pending ones of ``migrations``; returns the ids applied. Safe
    to run from several processes at once: PostgreSQL takes an advisory lock,
    SQLite a write lock."""
    ids = [m.id for m in migrations]
    if ids != sorted(set(ids)):
        raise RuntimeError(f"migration ids must be unique and increasing: {ids}")
    done: list[int] = []
    with engine.begin() as conn:
        # IF NOT EXISTS, not a check then a create: two openers may race here.
        conn.execute(sa.schema.CreateTable(migrations_table, if_not_exists=True))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7314001)"))
        else:
            # A write takes SQLite's write lock up front, so two openers cannot
            # both apply the same migration.
            conn.execute(migrations_table.delete().where(migrations_table.c.id < 0))
        have = set(conn.execute(sa.select(migrations_table.c.id)).scalars())
        for m in migrations:
            if m.id in have:
                continue
            for table in m.tables:
                table.create(conn)
            if m.func is not None:
                m.func(conn)
            conn.execute(migrations_table.insert().values(id=m.id, name=m.name, applied_at=time.time()))
            done.append(m.id)
    return done
