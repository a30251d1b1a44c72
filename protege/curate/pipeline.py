"""The curation run: filters -> scrub -> dedup over traces not yet curated.

Results go to the ``curated`` table beside the raw traces (which are never
modified): one row per trace seen, with the reason when it was dropped, and
for kept traces the scrubbed payloads (encrypted when the store has a key),
the exact-duplicate hash and the near-duplicate group. Runs are incremental:
a trace is curated once unless ``full=True`` redoes everything.

The serial path and the forked workers are in one module so that a worker
runs exactly the code the serial path does; later stages read the result
through ``view.py``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from protege.curate.filters import REASONS, FilterConfig, SchemaCache, check_trace, feedback_index
from protege.curate.migrations import curate_runs, curated
from protege.curate.view import decode_payload, plain_payload
from protege.ids import new_id
from protege.store import schema

if TYPE_CHECKING:
    from protege.store.db import TraceStore


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
    workers: int = field(
        default=0,
        metadata={
            "help": "Processes that read, filter and scrub (sessions split between them); "
            "0: one per CPU core, at most 2; 1: all in this process"
        },
    )
    parallel_min: int = field(
        default=4000, metadata={"help": "Fewest pending traces for which worker processes are started"}
    )

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


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _insert(store: TraceStore, table: sa.Table) -> Any:
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=[table.primary_key.columns.values()[0].name])


def _pending_ids(store: TraceStore, full: bool) -> tuple[list[str], list[str | None]]:
    """Ids (oldest first) of the traces to curate, with their session ids."""
    t = schema.traces
    if full:
        q = sa.select(t.c.id, t.c.session_id)
    else:
        q = (
            sa.select(t.c.id, t.c.session_id)
            .select_from(t.outerjoin(curated, curated.c.trace_id == t.c.id))
            .where(curated.c.trace_id.is_(None))
        )
    with store.read() as conn:
        rows = conn.execute(q.order_by(t.c.id)).all()
    return [r[0] for r in rows], [r[1] for r in rows]


def _encode(store: TraceStore, value: Any) -> str | None:
    if value is None:
        return None
    text = _dumps(value)
    return store.cipher.encrypt(text) if store.cipher is not None else text


def curate(
    store: TraceStore,
    config: CurateConfig | None = None,
    *,
    scrubber: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> CurateReport:
    """Curate the traces not yet curated (all of them with ``config.full``).

    ``progress(done, total)`` is called after each batch. Returns the counts;
    with ``config.dry_run`` nothing is written.
    """
    from protege.curate.dedup import NearDupIndex, dedup_text, shingles

    cfg = config or CurateConfig()
    started = time.time()
    started_cpu = _cpu_s()
    report = CurateReport(run_id=new_id(), dry_run=cfg.dry_run)
    if cfg.scrub and scrubber is None:
        from protege.curate.scrub import Scrubber

        scrubber = Scrubber(surrogates=cfg.surrogates, ner=cfg.ner)

    if cfg.full and not cfg.dry_run:
        with store.write() as conn:
            conn.execute(curated.delete())
    ids, sessions = _pending_ids(store, cfg.full)
    total = len(ids)

    def load_shingles(key: str) -> Any:
        t = schema.traces
        with store.read() as conn:
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
        request = decode_payload(store, row.request, row.encrypted)
        if row.delta is not None:
            request = {**request, **decode_payload(store, row.delta, row.delta_encrypted)}
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
        with store.read() as conn:
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
        with store.read() as conn:
            fb = [dict(r._mapping) for r in conn.execute(sa.select(schema.feedback))]
        by_trace, by_session = feedback_index(fb)
    worker_args = (store, scrubber, filters, by_trace, by_session, index)
    dropped: Counter[str] = Counter()
    scrubbed: Counter[str] = Counter()
    done = 0
    for chunk_results in _results(ids, sessions, cfg, worker_args):
        rows: list[dict[str, Any]] = []
        now = time.time()
        for r in chunk_results:
            if r.kinds and r.raw_hash not in raw_seen:  # counted once per distinct request, as one process would
                for kind in r.kinds:
                    scrubbed[kind] += 1
            if r.reason is not None:
                rows.append(_row(report.run_id, r, now, kept=0, reason=r.reason))
                continue
            # A request seen verbatim earlier in this run is an exact duplicate
            # whatever scrubbing made of it (workers skip scrubbing such repeats).
            h0 = raw_seen.get(r.raw_hash)
            if h0 is None:
                if r.hash is None:  # pragma: no cover - a worker returns repeats after their first
                    raise RuntimeError("curation worker returned a repeat before its first occurrence")
                raw_seen[r.raw_hash] = h0 = r.hash
            if r.hash is not None and r.hash != h0 and h0 in seen_hashes:
                # Another worker scrubbed this request first (its caches may have
                # answered differently): this worker's hash must still count as seen.
                seen_hashes.setdefault(r.hash, seen_hashes[h0])
            if h0 in seen_hashes:
                group = index.find(seen_hashes[h0])
                rows.append(
                    _row(report.run_id, r, now, kept=0, reason="exact_duplicate", exact_hash=h0, group=group)
                )
                continue
            if r.shingles is None:  # pragma: no cover - only skipped for hashes already kept
                raise RuntimeError("curation worker skipped shingles of a new input")
            group, signature = index.assign_hashed(r.id, r.shingles, r.hashvalues)
            if group != r.id:
                report.near_duplicates += 1
            seen_hashes[h0] = group
            if r.hash is not None:
                seen_hashes.setdefault(r.hash, group)
            rows.append(
                _row(
                    report.run_id,
                    r,
                    now,
                    kept=1,
                    exact_hash=h0,
                    group=group,
                    minhash=signature,
                    request=r.request,
                    response=r.response,
                    encrypted=r.encrypted,
                )
            )
        for row in rows:
            if row["kept"]:
                report.kept += 1
            else:
                dropped[row["reason"]] += 1
        report.seen += len(rows)
        if not cfg.dry_run and rows:
            with store.write() as conn:
                conn.execute(_insert(store, curated), rows)
        done += len(chunk_results)
        if progress is not None:
            progress(min(done, total), total)

    merged = index.merged()
    if merged and not cfg.dry_run:
        # A trace close to two earlier groups joined them; relabel the absorbed ones.
        with store.write() as conn:
            for old, new in merged.items():
                conn.execute(
                    curated.update().where(curated.c.near_dup_group == old).values(near_dup_group=new)
                )

    report.dropped = {r: dropped[r] for r in REASONS if dropped.get(r)}
    report.scrubbed = dict(sorted(scrubbed.items()))
    report.elapsed_s = time.time() - started
    report.cpu_s = _cpu_s() - started_cpu
    if not cfg.dry_run:
        with store.write() as conn:
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


@dataclass
class _Result:
    """What a worker made of one trace; the run decides what is kept."""

    id: str
    created_at: float
    reason: str | None = None
    raw_hash: str = ""
    hash: str | None = None  # scrubbed input hash; None for a repeat the worker saw before
    request: str | None = None  # encoded scrubbed delta
    response: str | None = None
    encrypted: int = 0
    kinds: tuple[str, ...] = ()
    shingles: Any = None
    hashvalues: Any = None


class _Worker:
    """The per-trace work, with no decision that depends on other traces:
    read, decode, filter, scrub, hash, shingle. Its caches (detections, NER,
    tools lists, schema validators) live as long as it does, so one worker
    should see all calls of a session."""

    def __init__(
        self,
        store: TraceStore,
        scrubber: Any,
        filters: FilterConfig,
        by_trace: dict[str, Any],
        by_session: dict[str, Any],
        hasher: Any,
    ) -> None:
        from protege.curate.parts import RequestDecoder

        self.store, self.scrubber, self.filters = store, scrubber, filters
        self.by_trace, self.by_session, self.hasher = by_trace, by_session, hasher
        self.schemas = SchemaCache()
        self.decoder = RequestDecoder()
        self.raw_seen: set[str] = set()
        self.hashed: set[str] = set()  # scrubbed hashes already shingled: the run keeps or drops them

    def run(self, ids: list[str]) -> list[_Result]:
        from protege.curate.dedup import dedup_text, exact_hash, shingles

        store, scrubber = self.store, self.scrubber
        out: list[_Result] = []
        fresh: list[tuple[_Raw, str]] = []
        repeats: list[_Result] = []
        for t in _read_raw(store, ids, self.decoder):
            fb = self.by_trace.get(t.id) or (self.by_session.get(t.session_id) if t.session_id else None)
            reason = check_trace(t, self.filters, self.schemas, fb)
            if reason is not None:
                out.append(_Result(t.id, t.created_at, reason))
                continue
            rh = exact_hash(t.request, t.tools_digest)
            if rh in self.raw_seen:
                repeats.append(_Result(t.id, t.created_at, raw_hash=rh))
            else:
                self.raw_seen.add(rh)
                fresh.append((t, rh))
        if scrubber is not None and fresh:
            strings: list[str] = []
            for t, _ in fresh:
                strings.extend(scrubber.record_strings(t.request, t.response))
            scrubber.prime(strings)
        encrypted = 1 if store.cipher is not None else 0
        for t, rh in fresh:
            request, response = t.request, t.response
            req_delta: dict[str, Any] | None = None
            resp_out: dict[str, Any] | None = None
            kinds: tuple[str, ...] = ()
            if scrubber is not None:
                red = scrubber.redactor()
                request = scrubber.scrub_request(request, red)
                response = scrubber.scrub_response(response, red)
                if red.mapping:
                    kinds = tuple(kind for kind, _ in red.mapping)
                    req_delta = _delta(t.request, request)
                    resp_out = response if response != t.response else None
            h = rh if req_delta is None else exact_hash(request, t.tools_digest)
            r = _Result(t.id, t.created_at, raw_hash=rh, hash=h, kinds=kinds, encrypted=encrypted)
            if h not in self.hashed:
                self.hashed.add(h)
                r.shingles = shingles(dedup_text(request))
                r.hashvalues = self.hasher.hashvalues(r.shingles)
                r.request = _encode(store, req_delta)
                r.response = _encode(store, resp_out)
            out.append(r)
        out.extend(repeats)
        return out


# Set in the parent right before worker processes fork; each child builds its
# own _Worker from it (nothing is pickled but the ids and the results).
_FORK_ARGS: tuple[Any, ...] | None = None
_CHILD: _Worker | None = None


def _child_init() -> None:
    global _CHILD
    assert _FORK_ARGS is not None
    store = _FORK_ARGS[0]
    store.after_fork()  # the parent's pooled connections are not ours
    _CHILD = _Worker(*_FORK_ARGS)


def _child_run(ids: list[str]) -> list[_Result]:
    assert _CHILD is not None
    return _CHILD.run(ids)


def _can_fork(store: TraceStore) -> bool:
    import multiprocessing
    import sys

    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    if "torch" in sys.modules:
        # OpenMP thread pools (torch's) do not survive a fork; curation then runs in-process.
        return False
    url = str(getattr(store, "url", "") or "")
    if store.dialect == "sqlite":
        return bool(url) and ":memory:" not in url and url.rstrip("/") not in ("sqlite:", "sqlite:/")
    return store.dialect == "postgresql"


def _results(
    ids: list[str], sessions: list[str | None], cfg: CurateConfig, worker_args: tuple[Any, ...]
) -> Iterator[list[_Result]]:
    """Worker results, one list per chunk of ids, in a fixed order. With several
    workers, traces are split by session (the calls of one agent run share
    their prompts, so their scrubbing caches stay with one process) and each
    worker's chunks come back in id order, interleaved round robin."""
    import os
    import zlib

    workers = cfg.workers if cfg.workers > 0 else min(2, os.cpu_count() or 1)
    store = worker_args[0]
    if workers <= 1 or len(ids) < cfg.parallel_min or not _can_fork(store):
        worker = _Worker(*worker_args)
        for lo in range(0, len(ids), cfg.batch_size):
            yield worker.run(ids[lo : lo + cfg.batch_size])
        return

    import multiprocessing

    shards: list[list[str]] = [[] for _ in range(workers)]
    for i, s in zip(ids, sessions, strict=True):
        shards[zlib.crc32((s or i).encode()) % workers].append(i)
    chunks = [[sh[lo : lo + cfg.batch_size] for lo in range(0, len(sh), cfg.batch_size)] for sh in shards]
    scrubber = worker_args[1]
    if scrubber is not None and scrubber._use_ner():
        from protege.curate.names import load_ner

        load_ner()  # once, before forking: the children share the loaded model
    global _FORK_ARGS
    _FORK_ARGS = worker_args
    ctx = multiprocessing.get_context("fork")
    pools = [ctx.Pool(1, initializer=_child_init) for _ in range(workers)]
    _FORK_ARGS = None
    try:
        window = 2
        pending: list[list[Any]] = [
            [pools[w].apply_async(_child_run, (c,)) for c in chunks[w][:window]] for w in range(workers)
        ]
        for i in range(max(len(c) for c in chunks)):
            for w in range(workers):
                if i >= len(chunks[w]):
                    continue
                got = pending[w][i].get()
                if i + window < len(chunks[w]):
                    pending[w].append(pools[w].apply_async(_child_run, (chunks[w][i + window],)))
                yield got
    except BaseException:
        for p in pools:
            p.terminate()
            p.join()
        raise
    for p in pools:
        p.close()
        p.join()


def _row(
    run_id: str,
    t: Any,
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


def _read_raw(store: TraceStore, ids: list[str], decoder: Any) -> list[_Raw]:
    """Raw traces by id, oldest first, only the columns curation needs; the
    request's tools list is decoded once per distinct value (``RequestDecoder``)."""
    t = schema.traces
    cols = (t.c.id, t.c.created_at, t.c.session_id, t.c.status, t.c.finish_reason, t.c.request, t.c.response)
    with store.read() as conn:
        rows = conn.execute(sa.select(*cols, t.c.encrypted).where(t.c.id.in_(ids)).order_by(t.c.id)).all()
    out = []
    for r in rows:
        text = r.request
        if r.encrypted:
            text = plain_payload(store, text)
        request, digest = decoder.decode(text)
        out.append(
            _Raw(
                r.id,
                r.created_at,
                r.session_id,
                r.status,
                r.finish_reason,
                request,
                decode_payload(store, r.response, r.encrypted),
                digest,
            )
        )
    return out
