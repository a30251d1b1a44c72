"""Edits a user makes to discovered tasks: rename, merge, split."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from protege.tasks.cluster import ClusterConfig, cluster_calls
from protege.tasks.discover import ACTIVE, Task, _task_id, describe, load_tasks, name_uniquely, save_tasks
from protege.tasks.embed import Embedder
from protege.tasks.features import CallFeatures, extract
from protege.tasks.label import ctfidf_keywords
from protege.tasks.migrations import tasks_table

if TYPE_CHECKING:
    from protege.store.db import TraceStore


def find_task(store: TraceStore, ref: str) -> Task:
    """A task by id, unique id prefix, or name/label."""
    tasks = load_tasks(store, status=None)
    exact = [t for t in tasks if t.id == ref]
    if exact:
        return exact[0]
    hits = [t for t in tasks if t.status == ACTIVE and (t.id.startswith(ref) or ref in (t.name, t.label))]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ValueError(f"no task {ref!r} (see `protege tasks list`)")
    raise ValueError(f"{ref!r} matches {len(hits)} tasks: {', '.join(t.id for t in hits[:5])}")


def _names_in_use(store: TraceStore, leaving: set[str]) -> set[str]:
    return {t.display_name for t in load_tasks(store) if t.id not in leaving}


def rename_task(store: TraceStore, ref: str, name: str) -> Task:
    task = find_task(store, ref)
    if name.strip() and name.strip() in _names_in_use(store, {task.id}):
        raise ValueError(f"another task is already called {name.strip()!r}")
    task.name = name.strip() or None
    task.updated_at = time.time()
    save_tasks(store, [task])
    return task


def _totals(store: TraceStore) -> tuple[int, float]:
    t = sa.table("traces", sa.column("status"), sa.column("cost_usd"))
    with store.read() as conn:
        n, cost = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0)).where(t.c.status == "ok")
        ).one()
    return int(n), float(cost)


def _features(store: TraceStore, task_ids: list[str]) -> tuple[list[CallFeatures], dict[str, str]]:
    docs: dict[str, str] = {}
    feats = []
    for tid in task_ids:
        feats.extend(extract(tr, docs) for tr in store.iter_traces(task_id=tid))
    return feats, docs


def _embedder_like(task: Task) -> Embedder:
    """An embedder of the kind that made the task's centroid."""
    from protege.tasks.embed import HASHING, HASHING_DIM, EmbedConfig

    if task.centroid is not None and task.centroid.shape[0] == HASHING_DIM:
        return Embedder(EmbedConfig(model=HASHING))
    return Embedder()


def _centroid(embedder: Embedder, feats: list[CallFeatures]) -> np.ndarray | None:
    texts = list(dict.fromkeys(f.instruction for f in feats if f.instruction))[:32]
    if not texts:
        return None
    v = embedder.encode(texts).mean(0)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def merge_tasks(store: TraceStore, refs: list[str], *, embedder: Embedder | None = None) -> Task:
    """Fold the other tasks into the first: one id, one description."""
    tasks = [find_task(store, r) for r in refs]
    if len({t.id for t in tasks}) < 2:
        raise ValueError("merge needs at least two different tasks")
    keep, others = tasks[0], tasks[1:]
    for other in others:
        store.set_task_ids({tr.id: keep.id for tr in store.iter_traces(task_id=other.id)})
    feats, _ = _features(store, [keep.id])
    n, cost = _totals(store)
    embedder = embedder or _embedder_like(keep)
    words = ctfidf_keywords([[f.instruction for f in feats[:500]]])[0]
    merged = describe(feats, total_n=n, total_cost=cost, keywords=words,
                      centroid=_centroid(embedder, feats), task_id=keep.id)
    merged.name, merged.created_at = keep.name, keep.created_at
    merged.pinned = True  # later discovery keeps the merge
    merged.tags = sorted({*keep.tags, *(tag for o in others for tag in o.tags), *merged.tags})
    name_uniquely([merged], _names_in_use(store, {t.id for t in tasks}))
    now = time.time()
    with store.write() as conn:
        conn.execute(
            tasks_table.update()
            .where(tasks_table.c.id.in_([o.id for o in others]))
            .values(status=f"merged:{keep.id}", n_traces=0, updated_at=now)
        )
    save_tasks(store, [merged])
    return merged


def split_task(
    store: TraceStore, ref: str, *, k: int | None = None, embedder: Embedder | None = None
) -> list[Task]:
    """Re-cluster one task's traces into ``k`` tasks (default: chosen by silhouette)."""
    task = find_task(store, ref)
    feats, docs = _features(store, [task.id])
    if len(feats) < 2:
        raise ValueError(f"task {task.id} has {len(feats)} trace(s): nothing to split")
    embedder = embedder or _embedder_like(task)
    cfg = ClusterConfig(k=k, min_silhouette=0.0, min_silhouette_leftover=0.0)
    # Inside one task the call-site features are shared: let instructions and
    # actions decide.
    cfg.w_template = cfg.w_fingerprint = 0.0
    result = cluster_calls(feats, docs, embedder, cfg)
    groups: list[list[CallFeatures]] = [[] for _ in range(result.n_clusters)]
    for f, lab in zip(feats, result.labels, strict=True):
        groups[lab].append(f)
    groups = [g for g in groups if g]
    if k is not None and len(groups) > k:
        # Calls the clustering set apart (rare actions, abstentions) go to the
        # nearest of the k biggest groups, so the split gives exactly k tasks.
        groups.sort(key=len, reverse=True)
        centres = [_centroid(embedder, g) for g in groups]
        for extra, centre in zip(groups[k:], centres[k:], strict=True):
            sims = [float(c @ centre) if c is not None and centre is not None else -1.0 for c in centres[:k]]
            groups[int(np.argmax(sims))].extend(extra)
        groups = groups[:k]
    if len(groups) < 2:
        raise ValueError(f"task {task.id} does not split: its calls form one group")
    n, cost = _totals(store)
    words = ctfidf_keywords([[f.instruction for f in g[:500]] for g in groups])
    taken = _names_in_use(store, {task.id})
    now = time.time()
    parts = []
    for j, (g, w) in enumerate(zip(groups, words, strict=True)):
        part = describe(g, total_n=n, total_cost=cost, keywords=w, centroid=_centroid(embedder, g),
                        task_id=_task_id(f"{task.id}/split/{j}/{now}"))
        if task.name:
            part.name = f"{task.name} ({j + 1})"
        part.pinned = True  # later discovery keeps the split
        parts.append(part)
        store.set_task_ids({f.id: part.id for f in g})
    name_uniquely(parts, taken)
    with store.write() as conn:
        conn.execute(
            tasks_table.update().where(tasks_table.c.id == task.id)
            .values(status=f"split:{','.join(p.id for p in parts)}", n_traces=0, updated_at=now)
        )
    save_tasks(store, parts)
    return parts
