"""Trace store: schema, migrations, encryption at rest. It knows no stage:
``protege.database.open_store`` opens it with every stage's tables."""

from __future__ import annotations

from protege.store.crypto import EncryptionError, PayloadCipher
from protege.store.db import StoreError, TraceStore, make_engine
from protege.store.records import Feedback, Trace

__all__ = [
    "EncryptionError",
    "Feedback",
    "PayloadCipher",
    "StoreError",
    "Trace",
    "TraceStore",
    "make_engine",
]
