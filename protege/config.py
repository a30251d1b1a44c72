"""Where protege keeps its state, and how to reach the store.

Everything resolves from the environment with offline-friendly defaults, so a
fresh machine needs no configuration file at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def protege_home() -> Path:
    """State directory: ``PROTEGE_HOME``, else ``~/.protege``."""
    return Path(os.environ.get("PROTEGE_HOME") or Path.home() / ".protege").expanduser()


def default_db_url() -> str:
    """``PROTEGE_DB_URL`` if set, else the SQLite file under ``PROTEGE_HOME``."""
    url = os.environ.get("PROTEGE_DB_URL")
    if url:
        return url
    return f"sqlite:///{protege_home() / 'protege.db'}"


def teacher_url(default: str = "https://api.openai.com/v1") -> str:
    """The teacher's base URL: ``PROTEGE_TEACHER``, else the older name
    ``PROTEGE_UPSTREAM``, else ``default``."""
    return os.environ.get("PROTEGE_TEACHER") or os.environ.get("PROTEGE_UPSTREAM") or default


def artifacts_dir() -> Path:
    """Adapters, datasets, reports: ``PROTEGE_HOME/artifacts``."""
    return protege_home() / "artifacts"


@dataclass(kw_only=True)
class StoreConfig:
    """How to open the trace store."""

    url: str = field(
        default_factory=default_db_url,
        metadata={"help": "sqlite:///path or postgresql://user@host:port/db"},
    )
    encryption_key: str | None = field(
        default_factory=lambda: os.environ.get("PROTEGE_ENCRYPTION_KEY") or None,
        metadata={
            "help": "Fernet key (or passphrase) used to encrypt request/response payloads "
            "at rest; from PROTEGE_ENCRYPTION_KEY"
        },
    )
