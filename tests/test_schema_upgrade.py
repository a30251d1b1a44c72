"""Databases made before the tables were declared once still open, upgrade and
keep every row; a fresh database gets the schema they had, on both engines.

``tests/data/schema_2026-12-07.sql`` is the DDL those releases ran, migration by
migration, written out once from the code of that day and never regenerated:
it is what old databases are, whatever the code says now."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from protege.database import MIGRATIONS, open_store
from protege.store.db import make_engine

FROZEN = Path(__file__).parent / "data" / "schema_2026-12-07.sql"


def _frozen() -> tuple[str, list[tuple[int, str, list[str]]]]:
    """The ledger's DDL, then (id, name, statements) for each migration."""
    ledger = ""
    migrations: list[tuple[int, str, list[str]]] = []
    for block in re.split(r"^-- ", FROZEN.read_text(), flags=re.M):
        head, _, body = block.partition("\n")
        statements = [s.strip() for s in body.split(";") if s.strip()]
        if head == "protege_migrations":
            (ledger,) = statements
        elif m := re.fullmatch(r"migration (\d+): (.+)", head):
            migrations.append((int(m[1]), m[2], statements))
    return ledger, migrations


def _build_old(engine: sa.Engine, *, skip: frozenset[int] = frozenset()) -> None:
    """A database as the old code left it, lacking the migrations in ``skip``."""
    ledger, migrations = _frozen()
    with engine.begin() as conn:
        conn.exec_driver_sql(ledger)
        for mid, name, statements in migrations:
            if mid in skip:
                continue
            for statement in statements:
                conn.exec_driver_sql(statement)
            conn.execute(
                sa.text("INSERT INTO protege_migrations (id, name, applied_at) VALUES (:i, :n, :t)"),
                {"i": mid, "n": name, "t": 1_700_000_000.0 + mid},
            )


def _schema(engine: sa.Engine) -> dict[str, Any]:
    insp = sa.inspect(engine)
    dialect = engine.dialect.name
    out: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        pk = insp.get_pk_constraint(name)["constrained_columns"]
        columns = [
            (
                c["name"],
                c["type"].compile(dialect=engine.dialect),
                # The old `id TEXT PRIMARY KEY` let SQLite (by a legacy quirk,
                # never PostgreSQL) store NULL there; tables made now say NOT NULL.
                c["nullable"] and c["name"] not in pk,
                None if c["default"] is None else str(c["default"]),
            )
            for c in insp.get_columns(name)
        ]
        indexes = sorted(
            (
                i["name"],
                tuple(i["column_names"]),
                bool(i["unique"]),
                str(i.get("dialect_options", {}).get(f"{dialect}_where")),
            )
            for i in insp.get_indexes(name)
        )
        out[name] = {"columns": columns, "primary_key": pk, "indexes": indexes}
    return out


# Values that must come back exactly: floats that REAL and DOUBLE PRECISION keep
# to the last bit, text PostgreSQL and SQLite store alike, NULL where allowed.
_FLOATS = (0.1, 1 / 3, 1e-300, 1.7976931348623157e308, -2.5)


def _value(column: sa.Column, table: str, row: int) -> Any:
    if column.nullable and row % 2 and not column.primary_key:
        return None
    if isinstance(column.type, sa.Integer):
        return row * 1_000_003 - 7
    if isinstance(column.type, sa.Float):
        return _FLOATS[row % len(_FLOATS)] * (row + 1)
    return f'{table}.{column.name}.{row} {{"é": [1, "✓"]}}'


def _fill(engine: sa.Engine, rows: int = 3) -> None:
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            if table.name != "protege_migrations":
                conn.execute(table.insert(), [{c.name: _value(c, table.name, r) for c in table.c} for r in range(rows)])


def _dump(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            t.name: [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in meta.sorted_tables
        }


def _open(url: str) -> sa.Engine:
    store = open_store(url)
    store.close()
    return make_engine(url)


def test_a_fresh_database_has_the_schema_old_ones_have(db_url: str, tmp_path: Path) -> None:
    fresh = _open(db_url)
    if fresh.dialect.name == "sqlite":
        old = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        _build_old(old)
        assert _schema(fresh) == _schema(old)
    else:  # one PostgreSQL schema per test: build the old one after the fresh is read
        new_schema = _schema(fresh)
        with fresh.begin() as conn:
            for table in sa.inspect(conn).get_table_names():
                conn.exec_driver_sql(f"DROP TABLE {table}")
        _build_old(fresh)
        assert new_schema == _schema(fresh)
    fresh.dispose()


def test_every_row_of_an_old_database_survives_opening(db_url: str) -> None:
    engine = make_engine(db_url)
    _build_old(engine)
    _fill(engine)
    before = _dump(engine)
    assert all(before[t] for t in before if t != "protege_migrations")
    # What went in comes back: the floats to the last bit.
    assert before["traces"][1]["created_at"] == _FLOATS[1] * 2
    # Nothing to apply: every id the old code recorded means what it did.
    open_store(db_url).close()
    assert _dump(engine) == before
    engine.dispose()


def test_a_database_from_before_a_column_gains_it_and_keeps_its_rows(db_url: str) -> None:
    """Migration 201 added tasks.pinned; a database made before it gets the
    column (0 for every old task) and every other migration runs only once."""
    engine = make_engine(db_url)
    _build_old(engine, skip=frozenset({201}))
    _fill(engine)
    before = _dump(engine)
    assert "pinned" not in before["tasks"][0]
    open_store(db_url).close()
    after = _dump(engine)
    assert after["tasks"] == [{**row, "pinned": 0} for row in before["tasks"]]
    assert {t: rows for t, rows in after.items() if t not in ("tasks", "protege_migrations")} == {
        t: rows for t, rows in before.items() if t not in ("tasks", "protege_migrations")
    }
    ledger = {r["id"]: r for r in after["protege_migrations"]}
    assert sorted(ledger) == [m.id for m in MIGRATIONS]
    assert before["protege_migrations"] == [ledger[r["id"]] for r in before["protege_migrations"]]
    engine.dispose()
