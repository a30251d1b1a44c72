from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL = os.environ.get("PROTEGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return None
    except Exception as exc:  # report why, visibly, in the skip reason
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"


_PG_SKIP = _pg_reachable()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own PROTEGE_HOME; nothing touches ~/.protege."""
    home = tmp_path / "home"
    monkeypatch.setenv("PROTEGE_HOME", str(home))
    monkeypatch.delenv("PROTEGE_DB_URL", raising=False)
    monkeypatch.delenv("PROTEGE_ENCRYPTION_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the real server, dropped afterwards."""
    if _PG_SKIP:
        pytest.skip(_PG_SKIP)
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store on both engines: every store test runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'protege.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url: str):
    from protege.database import open_store

    s = open_store(db_url)
    yield s
    s.close()
