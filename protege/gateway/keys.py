"""Optional gateway API keys.

Two sources, both optional; with neither, the gateway is open (loopback use).
Once the file holds any key, even a revoked one, a key is required:
- ``PROTEGE_GATEWAY_KEYS``: a comma-separated list of plaintext keys (containers, CI);
- the keys file (``PROTEGE_HOME/gateway_keys.json``), managed by ``protege keys
  create|list|revoke``: only SHA-256 hashes are kept, the key is shown once.

A client presents its key as ``X-Protege-Key: KEY`` or ``Authorization: Bearer KEY``.
The running gateway re-reads the file when it changes, so a revoke takes effect
within a couple of seconds without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from protege.config import protege_home
from protege.ids import new_id
from protege.safejson import json_loads

KEY_PREFIX = "pk-"


def default_keys_file() -> Path:
    return protege_home() / "gateway_keys.json"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        data = json_loads(path.read_text())
    except FileNotFoundError:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of keys")
    return data


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def create_key(name: str, path: Path | None = None) -> tuple[dict[str, Any], str]:
    """Add a key; returns its record and the plaintext key (never stored)."""
    path = path or default_keys_file()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = {
        "id": new_id(),
        "name": name,
        "prefix": key[:10],
        "sha256": hash_key(key),
        "created_at": time.time(),
        "revoked_at": None,
    }
    records = _read(path)
    records.append(record)
    _write(path, records)
    return record, key


def list_keys(path: Path | None = None) -> list[dict[str, Any]]:
    return _read(path or default_keys_file())


def revoke_key(key_id: str, path: Path | None = None) -> dict[str, Any]:
    """Revoke by id (or unique id prefix, or name)."""
    path = path or default_keys_file()
    records = _read(path)
    hits = [r for r in records if r["id"] == key_id or r["id"].startswith(key_id) or r["name"] == key_id]
    if len(hits) != 1:
        raise ValueError(f"no single key matches {key_id!r} ({len(hits)} found)")
    hits[0]["revoked_at"] = hits[0]["revoked_at"] or time.time()
    _write(path, records)
    return hits[0]


class KeyRing:
    """What the gateway checks presented keys against."""

    RELOAD_EVERY_S = 2.0

    def __init__(self, plain_keys: list[str] | None = None, path: Path | None = None) -> None:
        if plain_keys is None:
            env = os.environ.get("PROTEGE_GATEWAY_KEYS", "")
            plain_keys = [k.strip() for k in env.split(",") if k.strip()]
        self._static = {hash_key(k): "env" for k in plain_keys}
        self.path = path or default_keys_file()
        self._file: dict[str, str] = {}
        self._file_used = False
        self._sig: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
            # A rewrite replaces the file, so the inode changes even within one mtime tick.
            sig: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        if sig != self._sig:
            self._sig = sig
            records = _read(self.path)
            # Once any key was issued the gateway stays closed, even if all are revoked.
            self._file_used = bool(records)
            self._file = {r["sha256"]: r["name"] for r in records if not r.get("revoked_at")}

    @property
    def enabled(self) -> bool:
        self._maybe_reload()
        return bool(self._static or self._file_used)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= self.RELOAD_EVERY_S:
            self._checked = now
            self._reload()

    def check(self, key: str | None) -> str | None:
        """The key's name when it is valid, else None."""
        if not key:
            return None
        self._maybe_reload()
        h = hash_key(key)
        return self._static.get(h) or self._file.get(h)
