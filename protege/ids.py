"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def new_id(now: float | None = None) -> str:
    """A 26-character ULID; ids made in the same millisecond stay ordered."""
    global _last_ms, _last_rand
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if now is None and ms <= _last_ms:
            # Monotonic within a process: same millisecond -> increment the random part.
            ms = _last_ms
            rand = (_last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        if now is None:
            _last_ms, _last_rand = ms, rand
    return _encode(ms, 10) + _encode(rand, 16)


def id_time(ulid: str) -> float:
    """Epoch seconds encoded in a ULID."""
    ms = 0
    for ch in ulid[:10]:
        ms = ms * 32 + _ALPHABET.index(ch)
    return ms / 1000.0
