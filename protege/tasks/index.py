"""``TaskIndex``: which known task does a new call belong to? No re-clustering.

Lookup order, cheapest first: the explicit call-site tag; the fingerprint when
it belongs to one task; the tools the answer called (when the answer is known)
among that site's tasks; finally the nearest task centroid by instruction
embedding, accepted above a similarity threshold. The first three are dict
lookups (microseconds, fine on the gateway's hot path); the last embeds one
instruction (milliseconds) and only runs for call sites that mix several tasks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from protege.tasks.discover import Task, load_tasks
from protege.tasks.embed import HASHING, HASHING_DIM, EmbedConfig, Embedder
from protege.tasks.features import _history_tools, answer_of, last_user_message, tool_style
from protege.tasks.fingerprint import fingerprint, fingerprint_parts, tool_names

if TYPE_CHECKING:
    from protege.store.db import TraceStore


class TaskIndex:
    def __init__(self, tasks: Iterable[Task], *, threshold: float = 0.5, embedder: Embedder | None = None):
        self.tasks = {t.id: t for t in tasks}
        self.threshold = threshold
        self._embedder = embedder
        self.by_tag: dict[str, str] = {}
        by_fp: dict[str, set[str]] = defaultdict(set)
        by_template: dict[str, set[str]] = defaultdict(set)
        for t in self.tasks.values():
            # A client may name the task in X-Protege-Task by its tag, its
            # name (``trading-bot · next step``) or its id.
            for tag in (t.id, t.label, t.name or ""):
                if tag:
                    self.by_tag.setdefault(tag, t.id)
            for tag in t.tags:
                self.by_tag[tag] = t.id
            for fp in t.fingerprints:
                by_fp[fp].add(t.id)
            for tmpl in t.templates:
                by_template[tmpl].add(t.id)
        self.by_fp = {k: sorted(v) for k, v in by_fp.items()}
        self.by_template = {k: sorted(v) for k, v in by_template.items()}
        self.tool_owner: dict[str, set[str]] = defaultdict(set)
        for t in self.tasks.values():
            for name in t.tool_set:
                self.tool_owner[name].add(t.id)
        self.known_tools = set(self.tool_owner).union(*(t.offered for t in self.tasks.values()))
        ids = [t.id for t in self.tasks.values() if t.centroid is not None]
        self._ids = np.array(ids)
        self._centroids = (
            np.stack([self.tasks[i].centroid for i in ids]).astype(np.float32) if ids else np.zeros((0, 384))
        )
        self._styles = np.array([self.tasks[i].style for i in ids], dtype=np.float32)
        self.style_weight = 1.0
        self._embed_one = lru_cache(maxsize=4096)(self._embed_uncached)

    @classmethod
    def load(cls, store: TraceStore, **kwargs: Any) -> TaskIndex:
        return cls(load_tasks(store), **kwargs)

    def __len__(self) -> int:
        return len(self.tasks)

    def _embed_uncached(self, text: str) -> np.ndarray:
        if self._embedder is None:
            # Centroids made with the model-free hashing vectoriser have its width.
            hashing = self._centroids.shape[1] == HASHING_DIM
            self._embedder = Embedder(EmbedConfig(model=HASHING) if hashing else None)
        return self._embedder.encode([text])[0]

    def nearest(
        self, text: str, candidates: list[str] | None = None, *, threshold: float | None = None,
        style: float = 0.5,
    ) -> tuple[str | None, float]:
        if not len(self._ids) or not text:
            return None, 0.0
        sims = self._centroids @ self._embed_one(text[:2000])
        if style != 0.5:
            # camelCase functions against snake_case ones: another codebase.
            sims = sims - self.style_weight * np.abs(self._styles - style)
        if candidates:
            mask = np.isin(self._ids, candidates)
            if mask.any():
                sims = np.where(mask, sims, -2.0)
        best = int(np.argmax(sims))
        score = float(sims[best])
        limit = self.threshold if threshold is None else threshold
        return (str(self._ids[best]) if score >= limit else None), score

    def assign(
        self,
        request: dict[str, Any],
        *,
        task_tag: str | None = None,
        response: dict[str, Any] | None = None,
    ) -> tuple[str | None, float]:
        """(task id or None for "unassigned", confidence in [0, 1])."""
        if task_tag and task_tag in self.by_tag:
            return self.by_tag[task_tag], 1.0
        candidates = self.by_fp.get(fingerprint(request))
        style = 0.5
        if candidates is None:
            # A new tool set behind a known prompt template (tools chosen per call).
            template = fingerprint_parts(request)[0]
            candidates = self.by_template.get(template)
            new_tools = tuple(n for n in tool_names(request) if n not in self.known_tools)
            own = [c for c in candidates or () if self.tasks[c].own_tools >= 0.5]
            if new_tools and own:
                # The request brought functions never seen: it belongs with the
                # tasks whose requests bring their own, told apart by how the
                # functions are written and what the call asks.
                candidates = own
                style = tool_style(request, new_tools)
        if candidates and len(candidates) == 1:
            return candidates[0], 1.0
        # Tools tell the task apart inside a site that mixes several: the ones
        # the answer calls, else the ones earlier steps of this tool loop called.
        called = answer_of(response)[2] if response is not None else ()
        for names, confidence in ((called, 0.9), (_history_tools(request), 0.8), (_session_tools(request), 0.7)):
            if not names:
                continue
            owned = [self.tool_owner[n] for n in names if n in self.tool_owner]
            owners = set.intersection(*owned) if owned else set()
            if candidates:
                owners &= set(candidates)
            if len(owners) == 1:
                return owners.pop(), confidence
        task_id, score = self.nearest(last_user_message(request), candidates, style=style)
        if task_id is None and candidates and (score > 0 or style != 0.5):
            # A known call site: pick its closest task even below the threshold,
            # which guards against calls from sites never seen.
            return self.nearest(last_user_message(request), candidates, threshold=-1.0, style=style)
        return task_id, score


def _session_tools(request: dict[str, Any]) -> tuple[str, ...]:
    """Every tool called earlier in the conversation, across user turns: one
    agent session works one toolkit."""
    names: set[str] = set()
    for msg in request.get("messages") or ():
        if isinstance(msg, dict) and msg.get("role") == "assistant" and msg.get("tool_calls"):
            names.update((tc.get("function") or {}).get("name") or "" for tc in msg["tool_calls"])
    names.discard("")
    return tuple(sorted(names))


def assign_unassigned(store: TraceStore, *, index: TaskIndex | None = None, threshold: float = 0.5) -> dict[str, int]:
    """Give every ok trace without a task the task the index finds for it
    (no re-clustering). Returns counts: assigned, unassigned."""
    index = index or TaskIndex.load(store, threshold=threshold)
    out: dict[str, str | None] = {}
    counts = {"assigned": 0, "unassigned": 0}
    if not len(index):
        return counts
    # iter_traces filters on equality; NULL needs its own query.
    t = sa.table("traces", sa.column("id"), sa.column("task_id"), sa.column("status"))
    with store.read() as conn:
        ids = [r.id for r in conn.execute(sa.select(t.c.id).where(t.c.task_id.is_(None), t.c.status == "ok"))]
    for start in range(0, len(ids), 1000):
        for trace in store.iter_traces(ids=ids[start : start + 1000]):
            task_id, _ = index.assign(trace.request, task_tag=trace.task_tag, response=trace.response)
            out[trace.id] = task_id
            counts["assigned" if task_id else "unassigned"] += 1
    store.set_task_ids({k: v for k, v in out.items() if v})
    return counts
