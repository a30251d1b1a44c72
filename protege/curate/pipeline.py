"""The curation run: filters -> scrub -> dedup over traces not yet curated.

Results go to the ``curated`` table beside the raw traces (which are never
modified): one row per trace seen, with the reason when it was dropped, and
for kept traces the scrubbed payloads (encrypted when the store has a key),
the exact-duplicate hash and the near-duplicate group. Runs are incremental:
a trace is curated once unless ``full=True`` redoes everything.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from protege.curate.filters import REASONS, FilterConfig, SchemaCache, check_trace, feedback_index
from protege.curate.migrations import curate_runs, curated
from protege.ids import new_id
from protege.store import schema
from protege.store.records import Trace


@dataclass(kw_only=True)
class CurateConfig:
    """How a curation run filters, scrubs and deduplicates."""

    dry_run: bool = field(
        default=False, metadata={"help": "Count what would be kept and dropped; write nothing"}
    )
    full: bool = field(default=False, metadata={"help": "Redo every trace, not only those not yet curated"})
    scrub: bool = field(default=True, metadata={"help": "Scrub PII and secrets from kept traces"})
    surrogates: bool = field(
        default=False, metadata={"help": "Scrub with realistic fake values instead of <KIND_n> placeholders"}
    )
    ner: bool = field(default=True, metadata={"help": "Use spaCy NER for person names while scrubbing"})
    feedback_min: float | None = field(
        default=None, metadata={"help": "Keep only traces (or sessions) with a feedback score >= this"}
    )
    feedback_labels: tuple[str, ...] = field(
        default=(), metadata={"help": "Keep only traces (or sessions) with one of these feedback labels"}
    )
    check_schema: bool = field(
        default=True, metadata={"help": "Drop tool calls that break the tool's schema"}
    )
    near_dup_threshold: float = field(
        default=0.9,
        metadata={"help": "Jaccard similarity (character 5-grams) at which traces are near copies"},
    )
    candidate_threshold: float | None = field(
        default=None, metadata={"help": "LSH candidate threshold (default: near_dup_threshold - 0.15)"}
    )
    num_perm: int = field(default=64, metadata={"help": "MinHash permutations"})
    batch_size: int = field(default=1000, metadata={"help": "Traces read and written per batch"})

    def __post_init__(self) -> None:
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {self.near_dup_threshold}")
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")


@dataclass
class CurateReport:
    """What one run saw, kept and dropped (by reason)."""

    run_id: str
    dry_run: bool
    seen: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    near_duplicates: int = 0
    scrubbed: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def traces_per_s(self) -> float:
        return self.seen / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["traces_per_s"] = round(self.traces_per_s, 1)
        return d


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _insert(store: Any, table: sa.Table) -> Any:
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=[table.primary_key.columns.values()[0].name])


def _pending_ids(store: Any, full: bool) -> list[str]:
    t = schema.traces
    if full:
        q = sa.select(t.c.id)
    else:
        q = (
            sa.select(t.c.id)
            .select_from(t.outerjoin(curated, curated.c.trace_id == t.c.id))
            .where(curated.c.trace_id.is_(None))
        )
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(q.order_by(t.c.id))]


def _decode(store: Any, text: str | None, encrypted: int) -> Any:
    if text is None:
        return None
    if encrypted:
        from protege.store import EncryptionError

        if store.cipher is None:
            raise EncryptionError("curated payloads are encrypted: set PROTEGE_ENCRYPTION_KEY to read them")
        text = store.cipher.decrypt(text)
    return orjson.loads(text)


def _encode(store: Any, value: Any) -> str | None:
    if value is None:
        return None
    text = _dumps(value)
    return store.cipher.encrypt(text) if store.cipher is not None else text


def curate(
    store: Any,
    config: CurateConfig | None = None,
    *,
    scrubber: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> CurateReport:
    """Curate the traces not yet curated (all of them with ``config.full``).

    ``progress(done, total)`` is called after each batch. Returns the counts;
    with ``config.dry_run`` nothing is written.
    """
    from protege.curate.dedup import NearDupIndex, dedup_text, exact_hash, shingles
    from protege.curate.parts import RequestDecoder

    cfg = config or CurateConfig()
    started = time.time()
    started_cpu = time.process_time()
    report = CurateReport(run_id=new_id(), dry_run=cfg.dry_run)
    if cfg.scrub and scrubber is None:
        from protege.curate.scrub import Scrubber

        scrubber = Scrubber(surrogates=cfg.surrogates, ner=cfg.ner)

    if cfg.full and not cfg.dry_run:
        with store.engine.begin() as conn:
            conn.execute(curated.delete())
    ids = _pending_ids(store, cfg.full)
    total = len(ids)

    def load_shingles(key: str) -> Any:
        t = schema.traces
        with store.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    t.c.request,
                    t.c.encrypted,
                    curated.c.request.label("delta"),
                    curated.c.encrypted.label("delta_encrypted"),
                )
                .select_from(curated.join(t, t.c.id == curated.c.trace_id))
                .where(curated.c.trace_id == key)
            ).first()
        if row is None:
            return None
        request = _decode(store, row.request, row.encrypted)
        if row.delta is not None:
            request = {**request, **_decode(store, row.delta, row.delta_encrypted)}
        return shingles(dedup_text(request))

    index = NearDupIndex(
        threshold=cfg.near_dup_threshold,
        candidate_threshold=cfg.candidate_threshold,
        num_perm=cfg.num_perm,
        load_shingles=load_shingles,
    )
    seen_hashes: dict[str, str] = {}  # scrubbed input hash -> near-dup group, kept traces
    raw_seen: dict[str, str] = {}  # raw input hash -> scrubbed input hash, this run
    if not cfg.full and total:
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    curated.c.trace_id, curated.c.exact_hash, curated.c.near_dup_group, curated.c.minhash
                )
                .where(curated.c.kept == 1)
                .order_by(curated.c.trace_id)
            )
            for r in rows:
                if r.exact_hash:
                    seen_hashes.setdefault(r.exact_hash, r.near_dup_group or r.trace_id)
                if r.minhash:
                    index.add_existing(r.trace_id, r.near_dup_group or r.trace_id, r.minhash)

    filters = FilterConfig(
        check_schema=cfg.check_schema,
        feedback_min=cfg.feedback_min,
        feedback_labels=tuple(cfg.feedback_labels),
    )
    by_trace: dict[str, Any] = {}
    by_session: dict[str, Any] = {}
    if filters.uses_feedback:
        with store.engine.connect() as conn:
            fb = [dict(r._mapping) for r in conn.execute(sa.select(schema.feedback))]
        by_trace, by_session = feedback_index(fb)
    schemas = SchemaCache()
    decoder = RequestDecoder()
    dropped: Counter[str] = Counter()
    scrubbed: Counter[str] = Counter()

    for lo in range(0, total, cfg.batch_size):
        chunk = ids[lo : lo + cfg.batch_size]
        traces = _read_raw(store, chunk, decoder)
        passing: list[_Raw] = []
        rows: list[dict[str, Any]] = []
        now = time.time()
        for t in traces:
            fb = by_trace.get(t.id) or (by_session.get(t.session_id) if t.session_id else None)
            reason = check_trace(t, filters, schemas, fb)
            if reason is None:
                passing.append(t)
            else:
                rows.append(_row(report.run_id, t, now, kept=0, reason=reason))
        # A request seen verbatim earlier in this run is an exact duplicate whatever
        # scrubbing would make of it: skip the scrubbing.
        fresh: list[tuple[_Raw, str]] = []
        repeats: list[tuple[_Raw, str]] = []
        for t in passing:
            rh = exact_hash(t.request, t.tools_digest)
            if rh in raw_seen:
                repeats.append((t, rh))
            else:
                raw_seen[rh] = ""  # claimed; the scrubbed hash is filled in below
                fresh.append((t, rh))
        if scrubber is not None and fresh:
            strings: list[str] = []
            for t, _ in fresh:
                strings.extend(scrubber.record_strings(t.request, t.response))
            scrubber.prime(strings)
        for t, rh in fresh:
            request, response = t.request, t.response
            req_delta: dict[str, Any] | None = None
            resp_out: dict[str, Any] | None = None
            if scrubber is not None:
                red = scrubber.redactor()
                request = scrubber.scrub_request(request, red)
                response = scrubber.scrub_response(response, red)
                if red.mapping:
                    for kind, _ in red.mapping:
                        scrubbed[kind] += 1
                    req_delta = _delta(t.request, request)
                    resp_out = response if response != t.response else None
            h = rh if req_delta is None else exact_hash(request, t.tools_digest)
            raw_seen[rh] = h
            if h in seen_hashes:
                rows.append(
                    _row(
                        report.run_id,
                        t,
                        now,
                        kept=0,
                        reason="exact_duplicate",
                        exact_hash=h,
                        group=index.find(seen_hashes[h]),
                    )
                )
                continue
            group, signature = index.assign(t.id, dedup_text(request))
            if group != t.id:
                report.near_duplicates += 1
            seen_hashes[h] = group
            rows.append(
                _row(
                    report.run_id,
                    t,
                    now,
                    kept=1,
                    exact_hash=h,
                    group=group,
                    minhash=signature,
                    request=_encode(store, req_delta),
                    response=_encode(store, resp_out),
                    encrypted=1 if store.cipher is not None else 0,
                )
            )
        for t, rh in repeats:
            h0 = raw_seen[rh]
            rows.append(
                _row(
                    report.run_id,
                    t,
                    now,
                    kept=0,
                    reason="exact_duplicate",
                    exact_hash=h0,
                    group=index.find(seen_hashes[h0]),
                )
            )
        for r in rows:
            if r["kept"]:
                report.kept += 1
            else:
                dropped[r["reason"]] += 1
        report.seen += len(rows)
        if not cfg.dry_run and rows:
            with store.engine.begin() as conn:
                conn.execute(_insert(store, curated), rows)
        if progress is not None:
            progress(min(lo + len(chunk), total), total)

    merged = index.merged()
    if merged and not cfg.dry_run:
        # A trace close to two earlier groups joined them; relabel the absorbed ones.
        with store.engine.begin() as conn:
            for old, new in merged.items():
                conn.execute(
                    curated.update().where(curated.c.near_dup_group == old).values(near_dup_group=new)
                )

    report.dropped = {r: dropped[r] for r in REASONS if dropped.get(r)}
    report.scrubbed = dict(sorted(scrubbed.items()))
    report.elapsed_s = time.time() - started
    report.cpu_s = time.process_time() - started_cpu
    if not cfg.dry_run:
        with store.engine.begin() as conn:
            conn.execute(
                curate_runs.insert().values(
                    id=report.run_id,
                    started_at=started,
                    finished_at=time.time(),
                    config=_dumps(asdict(cfg)),
                    counts=_dumps({"seen": report.seen, "kept": report.kept, "dropped": report.dropped}),
                )
            )
    return report


def _row(
    run_id: str,
    t: _Raw,
    now: float,
    *,
    kept: int,
    reason: str | None = None,
    exact_hash: str | None = None,
    group: str | None = None,
    minhash: str | None = None,
    request: str | None = None,
    response: str | None = None,
    encrypted: int = 0,
) -> dict[str, Any]:
    return {
        "trace_id": t.id,
        "run_id": run_id,
        "kept": kept,
        "reason": reason,
        "exact_hash": exact_hash,
        "near_dup_group": group,
        "minhash": minhash,
        "request": request,
        "response": response,
        "encrypted": encrypted,
        "created_at": t.created_at,
        "curated_at": now,
    }


_LIST_COLUMNS = ("tools_offered", "tools_called")


def _delta(raw: dict[str, Any], scrubbed: dict[str, Any]) -> dict[str, Any] | None:
    """The top-level request keys scrubbing changed (tools never change, and
    they are most of a request's size: storing them twice would double the store)."""
    out = {
        k: v for k, v in scrubbed.items() if k in _SCRUBBED_KEYS and raw.get(k) is not v and raw.get(k) != v
    }
    return out or None


_SCRUBBED_KEYS = frozenset({"messages", "user", "metadata", "prompt", "input"})


@dataclass(slots=True)
class _Raw:
    """The columns of a raw trace that curation reads."""

    id: str
    created_at: float
    session_id: str | None
    status: str
    finish_reason: str | None
    request: dict[str, Any]
    response: Any
    tools_digest: str | None


def _read_raw(store: Any, ids: list[str], decoder: Any) -> list[_Raw]:
    """Raw traces by id, oldest first, only the columns curation needs; the
    request's tools list is decoded once per distinct value (``RequestDecoder``)."""
    t = schema.traces
    cols = (t.c.id, t.c.created_at, t.c.session_id, t.c.status, t.c.finish_reason, t.c.request, t.c.response)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(*cols, t.c.encrypted).where(t.c.id.in_(ids)).order_by(t.c.id)).all()
    out = []
    for r in rows:
        text = r.request
        if r.encrypted:
            text = _plain(store, text)
        request, digest = decoder.decode(text)
        out.append(
            _Raw(
                r.id,
                r.created_at,
                r.session_id,
                r.status,
                r.finish_reason,
                request,
                _decode(store, r.response, r.encrypted),
                digest,
            )
        )
    return out


def _plain(store: Any, text: str) -> str:
    from protege.store import EncryptionError

    if store.cipher is None:
        raise EncryptionError("trace payloads are encrypted: set PROTEGE_ENCRYPTION_KEY to read them")
    return store.cipher.decrypt(text)


def iter_curated(store: Any, *, task_id: str | None = None, batch_size: int = 1000) -> Iterator[Trace]:
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
        with store.engine.connect() as conn:
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
            request, _ = decoder.decode(_plain(store, raw_text) if raw_enc else raw_text)
            delta = _decode(store, m.pop("c_request"), enc)
            m["request"] = {**request, **delta} if delta else request
            scrubbed_response = m.pop("c_response")
            m["response"] = _decode(
                store,
                scrubbed_response if scrubbed_response is not None else m["response"],
                enc if scrubbed_response is not None else raw_enc,
            )
            m["stream"] = bool(m["stream"])
            for c in _LIST_COLUMNS:
                m[c] = orjson.loads(m[c]) if m[c] else []
            yield Trace.from_dict(m)
        last = rows[-1].id


def curated_counts(store: Any) -> dict[str, int]:
    """Kept and dropped-by-reason totals over the whole curated view."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(curated.c.kept, curated.c.reason, sa.func.count()).group_by(
                curated.c.kept, curated.c.reason
            )
        ).all()
    out: dict[str, int] = {}
    for kept, reason, n in rows:
        out["kept" if kept else reason or "dropped"] = out.get("kept" if kept else reason or "dropped", 0) + n
    return out
