"""The curated view, as later stages read it: kept traces with their scrubbed
payloads over the raw columns (``iter_curated``), and counts per task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from protege.curate.migrations import curated
from protege.store import schema
from protege.store.records import Trace

if TYPE_CHECKING:
    from protege.store.db import TraceStore

LIST_COLUMNS = ("tools_offered", "tools_called")


def decode_payload(store: TraceStore, text: str | None, encrypted: int) -> Any:
    if text is None:
        return None
    if encrypted:
        from protege.store import EncryptionError

        if store.cipher is None:
            raise EncryptionError("curated payloads are encrypted: set PROTEGE_ENCRYPTION_KEY to read them")
        text = store.cipher.decrypt(text)
    return orjson.loads(text)


def plain_payload(store: TraceStore, text: str) -> str:
    from protege.store import EncryptionError

    if store.cipher is None:
        raise EncryptionError("trace payloads are encrypted: set PROTEGE_ENCRYPTION_KEY to read them")
    return store.cipher.decrypt(text)


def iter_curated(store: TraceStore, *, task_id: str | None = None, batch_size: int = 1000) -> Iterator[Trace]:
    """Kept traces, scrubbed, oldest first, with the raw trace's id and columns;
    ``meta["curate"]`` holds ``near_dup_group`` and ``exact_hash``.

    Requests that carry the same tools list share one parsed list (decoding
    tens of kB of schemas per trace would dominate the read): treat
    ``request["tools"]`` as read only."""
    from protege.curate.parts import RequestDecoder

    decoder = RequestDecoder()
    t = schema.traces
    last: str | None = None
    while True:
        q = (
            sa.select(
                t,
                curated.c.request.label("c_request"),
                curated.c.response.label("c_response"),
                curated.c.encrypted.label("c_encrypted"),
                curated.c.near_dup_group,
                curated.c.exact_hash,
            )
            .select_from(curated.join(t, t.c.id == curated.c.trace_id))
            .where(curated.c.kept == 1)
        )
        if task_id is not None:
            q = q.where(t.c.task_id == task_id)
        if last is not None:
            q = q.where(t.c.id > last)
        with store.read() as conn:
            rows = conn.execute(q.order_by(t.c.id).limit(batch_size)).all()
        if not rows:
            return
        for row in rows:
            m = dict(row._mapping)
            meta = orjson.loads(m["meta"]) if m["meta"] else {}
            meta["curate"] = {"near_dup_group": m.pop("near_dup_group"), "exact_hash": m.pop("exact_hash")}
            m["meta"] = meta
            raw_enc, enc = m.pop("encrypted"), m.pop("c_encrypted")
            raw_text = m["request"]
            request, _ = decoder.decode(plain_payload(store, raw_text) if raw_enc else raw_text)
            delta = decode_payload(store, m.pop("c_request"), enc)
            m["request"] = {**request, **delta} if delta else request
            scrubbed_response = m.pop("c_response")
            m["response"] = decode_payload(
                store,
                scrubbed_response if scrubbed_response is not None else m["response"],
                enc if scrubbed_response is not None else raw_enc,
            )
            m["stream"] = bool(m["stream"])
            for c in LIST_COLUMNS:
                m[c] = orjson.loads(m[c]) if m[c] else []
            yield Trace.from_dict(m)
        last = rows[-1].id


def curated_counts(store: TraceStore) -> dict[str, int]:
    """Kept and dropped-by-reason totals over the whole curated view."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(curated.c.kept, curated.c.reason, sa.func.count()).group_by(
                curated.c.kept, curated.c.reason
            )
        ).all()
    out: dict[str, int] = {}
    for kept, reason, n in rows:
        out["kept" if kept else reason or "dropped"] = out.get("kept" if kept else reason or "dropped", 0) + n
    return out
