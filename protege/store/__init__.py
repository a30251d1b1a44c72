"""Trace store: schema, migrations, encryption at rest."""

from __future__ import annotations

from protege.store.crypto import EncryptionError, PayloadCipher
from protege.store.db import StoreError, TraceStore, make_engine, open_store
from protege.store.records import Feedback, Trace

__all__ = [
    "EncryptionError",
    "Feedback",
    "PayloadCipher",
    "StoreError",
    "Trace",
    "TraceStore",
    "make_engine",
    "open_store",
]
