"""The database every stage shares: the store's tables and each stage's,
migrated in order when a store is opened.

It sits above the stages so that the store, below them, names none of them:
this module gathers each stage's migrations and hands them to the store.
Entry points open stores through ``open_store`` here (``protege.open_store``),
so whichever opens a database first gives it every table.
"""

from __future__ import annotations

from protege.curate import migrations as curate
from protege.datasets import migrations as datasets
from protege.evaluate import migrations as evaluate
from protege.flywheel import migrations as flywheel
from protege.registry import migrations as registry
from protege.router import migrations as router
from protege.store import migrations as store
from protege.store.db import TraceStore
from protege.store.migrations import Migration
from protege.tasks import migrations as tasks

# In id order. Each stage owns a range, so it adds migrations without touching
# another's: curate 100-199, tasks 200-299, datasets 300-399, registry 400-499,
# evaluate 500-599, router 600-699, flywheel 700-799.
MIGRATIONS: tuple[Migration, ...] = (
    *store.MIGRATIONS,
    *curate.MIGRATIONS,
    *tasks.MIGRATIONS,
    *datasets.MIGRATIONS,
    *registry.MIGRATIONS,
    *evaluate.MIGRATIONS,
    *router.MIGRATIONS,
    *flywheel.MIGRATIONS,
)


def open_store(url: str | None = None, *, encryption_key: str | None = None) -> TraceStore:
    """Open the store at ``url`` and migrate every stage's tables; defaults to
    PROTEGE_DB_URL or the SQLite file under PROTEGE_HOME."""
    return TraceStore(url, encryption_key=encryption_key, migrations=MIGRATIONS)
