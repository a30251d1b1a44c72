"""``discover_tasks``: read traces, cluster them into tasks, describe and
persist the tasks, and write each trace's ``task_id``. One module because a
task's stable id, its pinned merges and splits and its unique name are decided
together with the task itself, on every rediscovery."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from protege.store.records import Trace
from protege.tasks.cluster import ClusterConfig, cluster_calls
from protege.tasks.embed import EmbedConfig, Embedder
from protege.tasks.features import CallFeatures, extract
from protege.tasks.label import (
    ctfidf_keywords,
    determinism,
    output_type,
    specialisation,
    task_name,
    token_stats,
    unique_names,
)
from protege.tasks.migrations import tasks_table

if TYPE_CHECKING:
    from protege.store.db import TraceStore

ACTIVE = "active"


@dataclass(kw_only=True)
class DiscoverConfig:
    source: str = field(
        default="auto",
        metadata={"help": "auto (curated view when it has rows, else raw ok traces) | curated | raw"},
    )
    since: float | None = field(default=None, metadata={"help": "only traces created after (epoch s)"})
    min_task_size: int = field(
        default=3, metadata={"help": "smaller clusters are left unassigned (task_id NULL)"}
    )
    min_task_share: float = field(
        default=0.01, metadata={"help": "clusters under this share of calls try to join a bigger task"}
    )
    join_similarity: float = field(
        default=0.3, metadata={"help": "instruction similarity at which a too-small cluster joins a task"}
    )
    cluster: ClusterConfig = field(default_factory=ClusterConfig, metadata={"help": "clustering"})
    embed: EmbedConfig = field(default_factory=EmbedConfig, metadata={"help": "embedding model"})


@dataclass(kw_only=True)
class Task:
    id: str
    label: str
    name: str | None = None
    output_type: str = "text"
    fingerprints: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    tool_set: list[str] = field(default_factory=list)
    # Share of calls whose request brought its own tools (a tool set seen with
    # a single request), and the called tools' identifier style: what tells a
    # new request with never-seen functions which such task it belongs to.
    own_tools: float = 0.0
    style: float = 0.5
    offered: list[str] = field(default_factory=list)  # the shared tool catalogue its requests offer
    centroid: np.ndarray | None = None
    n_traces: int = 0
    traffic_share: float = 0.0
    cost_share: float = 0.0
    token_stats: dict[str, float] = field(default_factory=dict)
    specialisation_score: float = 0.0
    score_parts: dict[str, Any] = field(default_factory=dict)
    keywords: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    status: str = ACTIVE
    pinned: bool = False  # the user merged or split it: discovery keeps its traces as they are
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def display_name(self) -> str:
        return self.name or self.label

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.display_name,
            "label": self.label,
            "output_type": self.output_type,
            "n_traces": self.n_traces,
            "traffic_share": round(self.traffic_share, 4),
            "cost_share": round(self.cost_share, 4),
            "token_stats": self.token_stats,
            "specialisation_score": self.specialisation_score,
            "score_parts": self.score_parts,
            "tool_set": self.tool_set,
            "own_tools_share": self.own_tools,
            "tool_style": self.style,
            "keywords": self.keywords,
            "tags": self.tags,
            "fingerprints": self.fingerprints[:20],
            "n_fingerprints": len(self.fingerprints),
            "examples": self.examples,
            "status": self.status,
            "pinned": self.pinned,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    # -- storage ------------------------------------------------------------
    def to_row(self) -> dict[str, Any]:
        centroid = None
        if self.centroid is not None:
            centroid = base64.b64encode(np.asarray(self.centroid, dtype=np.float32).tobytes()).decode()
        return {
            "id": self.id,
            "label": self.label,
            "name": self.name,
            "output_type": self.output_type,
            "fingerprints": json.dumps({"fingerprints": self.fingerprints, "templates": self.templates,
                                        "own_tools": self.own_tools, "style": self.style,
                                        "offered": self.offered}),
            "tags": json.dumps(self.tags),
            "tool_set": json.dumps(self.tool_set),
            "centroid": centroid,
            "n_traces": self.n_traces,
            "traffic_share": self.traffic_share,
            "cost_share": self.cost_share,
            "token_stats": json.dumps(self.token_stats),
            "specialisation_score": self.specialisation_score,
            "score_parts": json.dumps(self.score_parts),
            "keywords": json.dumps(self.keywords),
            "examples": json.dumps(self.examples),
            "status": self.status,
            "pinned": int(self.pinned),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_row(cls, row: Any) -> Task:
        m = dict(row._mapping)
        fps = json.loads(m["fingerprints"] or "{}")
        centroid = None
        if m["centroid"]:
            centroid = np.frombuffer(base64.b64decode(m["centroid"]), dtype=np.float32)
        return cls(
            id=m["id"],
            label=m["label"],
            name=m["name"],
            output_type=m["output_type"],
            fingerprints=fps.get("fingerprints", []),
            templates=fps.get("templates", []),
            own_tools=float(fps.get("own_tools", 0.0)),
            style=float(fps.get("style", 0.5)),
            offered=list(fps.get("offered", [])),
            tags=json.loads(m["tags"] or "[]"),
            tool_set=json.loads(m["tool_set"] or "[]"),
            centroid=centroid,
            n_traces=m["n_traces"],
            traffic_share=m["traffic_share"],
            cost_share=m["cost_share"],
            token_stats=json.loads(m["token_stats"] or "{}"),
            specialisation_score=m["specialisation_score"],
            score_parts=json.loads(m["score_parts"] or "{}"),
            keywords=json.loads(m["keywords"] or "[]"),
            examples=json.loads(m["examples"] or "[]"),
            status=m["status"],
            pinned=bool(m.get("pinned") or 0),
            created_at=m["created_at"],
            updated_at=m["updated_at"],
        )


@dataclass
class Discovery:
    tasks: list[Task]
    n_traces: int
    n_unassigned: int
    source: str
    seconds: float
    embedded: int
    merges: list[str] = field(default_factory=list)  # what discovery joined, and why


# -- reading -------------------------------------------------------------------
def read_traces(store: TraceStore, source: str = "auto", since: float | None = None) -> tuple[Iterable[Trace], str]:
    """The curated view when it exists and has rows (``auto``), else raw ok traces."""
    if source in ("auto", "curated"):
        from protege.curate import iter_curated

        it = iter(iter_curated(store))
        first = next(it, None)
        if first is not None:
            def chain() -> Iterable[Trace]:
                yield first
                yield from it

            return (t for t in chain() if since is None or t.created_at >= since), "curated"
        if source == "curated":
            raise ValueError("no curated traces: run `protege curate` first")
    return store.iter_traces(status="ok", since=since), "raw"


# -- describing ------------------------------------------------------------------
def _task_id(seed: str) -> str:
    return "task_" + hashlib.blake2b(seed.encode(), digest_size=5).hexdigest()


def describe(
    feats: Sequence[CallFeatures],
    *,
    total_n: int,
    total_cost: float,
    keywords: list[str],
    centroid: np.ndarray | None,
    task_id: str | None = None,
) -> Task:
    kind = output_type(feats)
    tools = Counter(n for f in feats for n in f.called)
    fps = Counter(f.fp for f in feats)
    templates = Counter(f.template for f in feats)
    fp_requests: dict[str, set[str]] = defaultdict(set)
    for f in feats:
        if len(fp_requests[f.fp]) < 3:
            fp_requests[f.fp].add(f.input_key)
    sets_with: Counter[str] = Counter()
    for tup in {id(f.offered): f.offered for f in feats}.values():
        sets_with.update(tup)
    # Brought along: a rare tool set whose called tools are found in few tool
    # sets (an agent retrieving tools per request calls recurring ones).
    own = [bool(f.called) and len(fp_requests[f.fp]) < 3 and all(sets_with[n] < 3 for n in f.called)
           for f in feats]
    own_tools = sum(own) / max(1, len(feats))
    styled = [f.style for f in feats if f.called and f.style != 0.5]
    # The catalogue (tools offered at its recurring fingerprints), so that a
    # request bringing new functions can be told from one offering the old ones.
    offered = sorted({n for tup in {id(f.offered): f.offered for f, o in zip(feats, own, strict=True) if not o}.values()
                      for n in tup})
    tags = sorted({f.tag for f in feats if f.tag})
    cost = sum(f.cost_usd or 0.0 for f in feats)
    cost_share = cost / total_cost if total_cost > 0 else 0.0
    det, how = determinism(feats, kind)
    score, parts = specialisation(len(feats), det, cost_share)
    parts["determinism_basis"] = how
    words = " ".join(keywords[:4]) or "misc"
    label = task_name(feats, kind=kind, own_tools=own_tools, keywords=keywords)
    examples = list(dict.fromkeys(f.instruction[:160] for f in feats if f.instruction))[:3]
    tid = task_id or _task_id(
        (tags[0] if tags else "") + "|" + "|".join(sorted(fps)[:5]) + "|" + ",".join(sorted(tools)) + words
    )
    return Task(
        id=tid,
        label=label,
        output_type=kind,
        fingerprints=[f for f, _ in fps.most_common(2000)],
        templates=[t for t, _ in templates.most_common(50)],
        tags=tags,
        tool_set=sorted(tools),
        own_tools=round(own_tools, 4),
        offered=offered[:5000],
        style=round(float(np.mean(styled)), 4) if styled else 0.5,
        centroid=centroid,
        n_traces=len(feats),
        traffic_share=len(feats) / total_n if total_n else 0.0,
        cost_share=cost_share,
        token_stats=token_stats(feats),
        specialisation_score=score,
        score_parts=parts,
        keywords=keywords,
        examples=examples,
    )


def build_tasks(
    feats: Sequence[CallFeatures],
    docs: dict[str, str],
    embedder: Embedder,
    cfg: DiscoverConfig,
    merges: list[str] | None = None,
) -> tuple[list[Task], list[int], int]:
    """Cluster (tags first) and describe. Returns tasks, the task index of
    each call (-1 unassigned) and how many texts were embedded; what was
    joined, and why, is appended to ``merges``."""
    merges = merges if merges is not None else []
    labels = [-1] * len(feats)
    groups: list[list[int]] = []
    by_tag: dict[str, list[int]] = defaultdict(list)
    untagged: list[int] = []
    for i, f in enumerate(feats):
        (by_tag[f.tag] if f.tag else untagged).append(i)
    for members in by_tag.values():
        groups.append(members)
    centroids: list[np.ndarray | None] = [None] * len(groups)
    embedded = 0
    if untagged:
        sub = [feats[i] for i in untagged]
        result = cluster_calls(sub, docs, embedder, cfg.cluster)
        embedded = result.embedded
        merges.extend(result.merges)
        clusters: list[list[int]] = [[] for _ in range(result.n_clusters)]
        for j, lab in enumerate(result.labels):
            clusters[lab].append(untagged[j])
        for c, members in enumerate(clusters):
            if members:
                groups.append(members)
                centroids.append(result.centroids[c])
    # Tag groups get a centroid from a few of their instructions, so new
    # untagged calls can still be matched to them.
    for g, members in enumerate(groups):
        if centroids[g] is None:
            texts = list(dict.fromkeys(feats[i].instruction for i in members[:200]))[:8]
            if texts:
                v = embedder.encode(texts).mean(0)
                centroids[g] = v / max(float(np.linalg.norm(v)), 1e-9)
    floor = max(cfg.min_task_size, int(cfg.min_task_share * len(feats)))
    big = [g for g, m in enumerate(groups) if len(m) >= floor or feats[m[0]].tag]
    # Fragments (under 1% of traffic by default) join the nearest bigger task
    # when alike; else they stay a task if not tiny, or unassigned.
    kept_c = [(g, centroids[g]) for g in big if centroids[g] is not None and not feats[groups[g][0]].tag]
    keep = list(big)
    joined = joined_calls = left_out = 0
    for g, members in enumerate(groups):
        if g in big:
            continue
        if centroids[g] is None or not kept_c:
            if len(members) >= cfg.min_task_size:
                keep.append(g)
            else:
                left_out += len(members)
            continue
        sims = [float(c @ centroids[g]) for _, c in kept_c]
        best = int(np.argmax(sims))
        if sims[best] >= cfg.join_similarity:
            groups[kept_c[best][0]].extend(members)
            joined += 1
            joined_calls += len(members)
        elif len(members) >= cfg.min_task_size:
            keep.append(g)
        else:
            left_out += len(members)
    if joined:
        merges.append(f"{joined} small group(s) ({joined_calls} calls, each under {floor} calls) joined the task "
                      f"whose instructions they read most like (similarity >= {cfg.join_similarity})")
    if left_out:
        merges.append(f"{left_out} calls in groups under {cfg.min_task_size} calls left unassigned")
    keep.sort()
    kws = ctfidf_keywords([[feats[i].instruction for i in groups[g][:500]] for g in keep])
    total_n = len(feats)
    total_cost = sum(f.cost_usd or 0.0 for f in feats)
    tasks = []
    for t, (g, words) in enumerate(zip(keep, kws, strict=True)):
        tasks.append(
            describe(
                [feats[i] for i in groups[g]],
                total_n=total_n,
                total_cost=total_cost,
                keywords=words,
                centroid=centroids[g],
            )
        )
        for i in groups[g]:
            labels[i] = t
    return tasks, labels, embedded


# -- persisting ------------------------------------------------------------------
def load_tasks(store: TraceStore, *, status: str | None = ACTIVE) -> list[Task]:
    q = sa.select(tasks_table)
    if status:
        q = q.where(tasks_table.c.status == status)
    with store.read() as conn:
        rows = conn.execute(q.order_by(tasks_table.c.n_traces.desc(), tasks_table.c.id)).all()
    return [Task.from_row(r) for r in rows]


def task_names(store: TraceStore) -> dict[str, str]:
    """Task id -> the name tables show (the user's, else the discovered one),
    for every task ever discovered in this store."""
    try:
        return {t.id: t.display_name for t in load_tasks(store, status=None)}
    except sa.exc.SQLAlchemyError:  # a store that never ran discovery
        return {}


def save_tasks(store: TraceStore, tasks: Sequence[Task]) -> None:
    """Insert or replace tasks by id."""
    if not tasks:
        return
    with store.write() as conn:
        conn.execute(tasks_table.delete().where(tasks_table.c.id.in_([t.id for t in tasks])))
        conn.execute(tasks_table.insert(), [t.to_row() for t in tasks])


def _previous_task_ids(store: TraceStore, ids: list[str]) -> dict[str, str]:
    """trace id -> the task it belongs to now (traces with one)."""
    previous: dict[str, str] = {}
    t = sa.table("traces", sa.column("id"), sa.column("task_id"))
    with store.read() as conn:
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            q = sa.select(t.c.id, t.c.task_id).where(t.c.id.in_(chunk), t.c.task_id.is_not(None))
            previous.update({r.id: r.task_id for r in conn.execute(q)})
    return previous


def _keep_pinned(pinned: dict[str, Task], tasks: list[Task], members: list[list[str]],
                 feats: Sequence[CallFeatures], previous: dict[str, str], *,
                 total_n: int) -> tuple[list[Task], list[list[str]]]:
    """Pinned tasks with their traces, plus the new clusters; a new cluster
    whose calls mostly come from a pinned task's call sites joins the one of
    those tasks whose instructions it is closest to."""
    by_id = {f.id: f for f in feats}
    keep: dict[str, list[str]] = {tid: [i for i, p in previous.items() if p == tid and i in by_id] for tid in pinned}
    fp_owner: dict[str, list[str]] = defaultdict(list)
    for tid, task in pinned.items():
        for fp in task.fingerprints:
            fp_owner[fp].append(tid)
    out_tasks, out_members = [], []
    for task, ids in zip(tasks, members, strict=True):
        owners = Counter(o for i in ids for o in fp_owner.get(by_id[i].fp, ()))
        if ids and owners and owners.most_common(1)[0][1] * 2 > len(ids):
            cands = [o for o, _ in owners.most_common()]
            if task.centroid is not None:
                cands.sort(key=lambda o: -float(pinned[o].centroid @ task.centroid)
                           if pinned[o].centroid is not None and pinned[o].centroid.shape == task.centroid.shape
                           else 1.0)
            keep[cands[0]].extend(ids)
        else:
            out_tasks.append(task)
            out_members.append(ids)
    total_cost = sum(f.cost_usd or 0.0 for f in feats)
    for tid, ids in keep.items():
        if not ids:
            continue
        old = pinned[tid]
        group = [by_id[i] for i in ids]
        task = describe(group, total_n=total_n, total_cost=total_cost, keywords=old.keywords,
                        centroid=old.centroid, task_id=tid)
        task.name, task.label, task.created_at, task.pinned = old.name, old.label, old.created_at, True
        task.tags = sorted({*old.tags, *task.tags})
        out_tasks.append(task)
        out_members.append(ids)
    return out_tasks, out_members


def _reuse_ids(store: TraceStore, tasks: list[Task], members: list[list[str]]) -> None:
    """Keep the id (and user-given name) of an existing task when most of a
    new task's traces already belonged to it, so datasets and adapters keep
    pointing at the same job across re-discovery."""
    previous = _previous_task_ids(store, [i for m in members for i in m])
    old = {task.id: task for task in load_tasks(store, status=None)}
    taken: set[str] = set()
    order = sorted(range(len(tasks)), key=lambda k: -len(members[k]))
    for k in order:
        if tasks[k].pinned:
            taken.add(tasks[k].id)
            continue
        votes = Counter(previous[i] for i in members[k] if i in previous)
        for prev_id, n in votes.most_common(3):
            if prev_id in taken or n * 2 < len(members[k]):
                continue
            taken.add(prev_id)
            tasks[k].id = prev_id
            if prev_id in old:
                tasks[k].name = old[prev_id].name or tasks[k].name
                tasks[k].created_at = old[prev_id].created_at
            break
    # Fresh ids must not collide with ids in use.
    used = set(old) | taken
    for k in order:
        if tasks[k].id in used and tasks[k].id not in taken:
            tasks[k].id = _task_id(tasks[k].id + str(time.time()) + str(k))


def name_uniquely(tasks: Sequence[Task], taken: set[str] | None = None) -> None:
    """Make the tasks' labels unique among themselves and against ``taken``
    and the names users gave (the biggest task keeps the plain label)."""
    used = set(taken or ()) | {t.name for t in tasks if t.name}
    order = sorted(tasks, key=lambda t: (-t.n_traces, t.id))
    for task, label in zip(order, unique_names([t.label for t in order], used), strict=True):
        task.label = label


def discover_tasks(
    store: TraceStore,
    cfg: DiscoverConfig | None = None,
    *,
    embedder: Embedder | None = None,
    progress: Callable[[str], None] | None = None,
) -> Discovery:
    """Discover tasks among the store's traces, persist them and write each
    trace's ``task_id``. Earlier tasks that no longer match are retired."""
    cfg = cfg or DiscoverConfig()
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    traces, source = read_traces(store, cfg.source, cfg.since)
    docs: dict[str, str] = {}
    say(f"reading {source} traces")
    feats = [extract(t, docs) for t in traces]
    # Tasks the user merged or split keep their traces; the rest is clustered,
    # and a new cluster from a pinned task's call sites joins it.
    pinned = {t.id: t for t in load_tasks(store) if t.pinned}
    previous = _previous_task_ids(store, [f.id for f in feats]) if pinned else {}
    held = [f for f in feats if previous.get(f.id) in pinned]
    free = [f for f in feats if previous.get(f.id) not in pinned]
    say(f"clustering {len(free)} calls" + (f" ({len(held)} in {len(pinned)} pinned tasks)" if pinned else ""))
    embedder = embedder or Embedder(cfg.embed)
    merges: list[str] = []
    tasks, labels, embedded = build_tasks(free, docs, embedder, cfg, merges) if free else ([], [], 0)
    members: list[list[str]] = [[] for _ in tasks]
    for f, lab in zip(free, labels, strict=True):
        if lab >= 0:
            members[lab].append(f.id)
    if pinned:
        tasks, members = _keep_pinned(pinned, tasks, members, feats, previous, total_n=len(feats))
        feats = held + free
    _reuse_ids(store, tasks, members)
    name_uniquely(tasks)
    now = time.time()
    for task in tasks:
        task.updated_at = now
    say("saving tasks")
    new_ids = {t.id for t in tasks}
    with store.write() as conn:
        conn.execute(
            tasks_table.update()
            .where(tasks_table.c.status == ACTIVE, tasks_table.c.id.not_in(list(new_ids) or [""]))
            .values(status="retired", updated_at=now)
        )
    save_tasks(store, tasks)
    assignments: dict[str, str | None] = {f.id: None for f in feats}
    for task, ids in zip(tasks, members, strict=True):
        for i in ids:
            assignments[i] = task.id
    store.set_task_ids(assignments)
    unassigned = sum(1 for v in assignments.values() if v is None)
    return Discovery(tasks, len(feats), unassigned, source, time.perf_counter() - t0, embedded, merges)
