"""Group calls into tasks by what they ask and what they do.

Traffic is first folded into *atoms*: calls from one call site (fingerprint)
whose answers call the same set of tools. Atoms are few (hundreds where calls
are 100k), so everything expensive happens per atom:

- the instruction side: MiniLM embeddings of a small sample of each atom's
  distinct (masked) instructions, averaged;
- the action side: MiniLM embeddings of the descriptions of the tools the atom
  calls, averaged (tools of one agent describe one domain, which is what ties
  ``cd`` to ``mv`` when one generic prompt offers every site's tools);
- the call site: same system-prompt template, same fingerprint.

Atoms are merged by average-linkage agglomerative clustering on a weighted
mix of those similarities, the cut chosen by silhouette. Calls that call no
tool inside a tool-using site (abstentions, clarifying questions) carry no
action, so they are assigned afterwards to the nearest task by instruction.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protege.tasks.features import CallFeatures
from protege.tasks.refine import NO_ACTION, merge_by_tool_loops, merge_own_tool_parts, move_by_sessions


@dataclass(kw_only=True)
class ClusterConfig:
    w_instruction: float = field(default=1.0, metadata={"help": "weight of instruction similarity"})
    w_action: float = field(default=2.0, metadata={"help": "weight of called-tool similarity"})
    w_usage: float = field(
        default=0.0, metadata={"help": "weight of tools being used in the same tool loops (off: hurt on BFCL)"}
    )
    weight_power: float = field(
        default=0.0, metadata={"help": "atoms weigh (calls ** this) when choosing the number of tasks"}
    )
    w_template: float = field(default=0.6, metadata={"help": "weight of sharing a system-prompt template"})
    w_fingerprint: float = field(default=0.4, metadata={"help": "weight of sharing a call-site fingerprint"})
    k: int | None = field(default=None, metadata={"help": "number of tasks (default: chosen by silhouette)"})
    max_k: int = field(default=40, metadata={"help": "most tasks considered when choosing k"})
    min_silhouette: float = field(
        default=0.12, metadata={"help": "below this best silhouette, keep everything as one task"}
    )
    sample_per_atom: int = field(
        default=8, metadata={"help": "distinct instructions embedded per atom for its centroid"}
    )
    max_embed: int = field(
        default=3000, metadata={"help": "most instructions embedded in one run (the slow part)"}
    )
    small_merge_distance: float = field(
        default=0.35, metadata={"help": "with fewer than 4 atoms, merge those closer than this"}
    )
    small_min_similarity: float = field(
        default=0.3, metadata={"help": "with fewer than 10 stray atoms, instruction similarity that joins them"}
    )
    loop_merge_share: float = field(
        default=0.1,
        metadata={"help": "join two tasks when calls counting this share of the bigger one's calls follow the other's tools "
                  "in one tool loop (0: off)"},
    )
    min_silhouette_leftover: float = field(
        default=0.08, metadata={"help": "silhouette needed to split calls whose actions never recur"}
    )
    min_distinct: int = field(
        default=3, metadata={"help": "distinct requests an action needs to count as a recurring job"}
    )
    w_style: float = field(
        default=1.0,
        metadata={"help": "weight of the called tools' identifier style (camelCase vs snake_case) when "
                  "splitting calls that bring their own functions"},
    )
    w_leftover_instruction: float = field(
        default=0.3, metadata={"help": "weight of the instruction (against the called tool's description) there"}
    )
    own_tools_style_gap: float = field(
        default=0.5,
        metadata={"help": "clusters of one call site whose requests bring their own functions are one task "
                  "unless their functions' identifier styles differ by this much (0: never join)"},
    )
    session_moves: int = field(
        default=3,
        metadata={"help": "rounds in which an action moves to the task it shares most agent sessions with "
                  "(same prompt template; 0: off)"},
    )
    seed: int = field(default=0, metadata={"help": "sampling seed"})


@dataclass
class Atom:
    key: tuple[str, tuple[str, ...]]
    members: list[int] = field(default_factory=list)
    instr: np.ndarray | None = None
    action: np.ndarray | None = None
    usage: np.ndarray | None = None
    style: float = 0.5


@dataclass
class Clustering:
    labels: list[int]  # per call, -1 never (every call gets a task)
    n_clusters: int
    centroids: np.ndarray  # instruction centroid per cluster (unit vectors)
    silhouette: float | None
    embedded: int  # instructions embedded
    merges: list[str] = field(default_factory=list)  # what was joined, and why, for the user


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def _action_key(f: CallFeatures) -> tuple[str, ...]:
    if f.called:
        return f.called
    if f.history:  # a final answer inside a tool loop belongs with the loop's tools
        return (NO_ACTION, *f.history)
    return (NO_ACTION,)


def _choose_cut(
    dist: np.ndarray, cfg: ClusterConfig, weights: np.ndarray | None = None
) -> tuple[np.ndarray, float | None, float]:
    """Average-linkage tree cut at the k with the best silhouette; also
    returns the distance at which that cut stops merging."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import silhouette_samples

    n = dist.shape[0]
    if n == 1:
        return np.zeros(1, dtype=int), None, 0.0
    tree = linkage(squareform(dist, checks=False), method="average")
    if n < 4 and cfg.k is None:
        # Too few atoms for a silhouette: keep apart what is clearly apart.
        labels = fcluster(tree, t=cfg.small_merge_distance, criterion="distance") - 1
        return labels, None, cfg.small_merge_distance
    if cfg.k is not None:
        k = min(cfg.k, n)
        return fcluster(tree, t=k, criterion="maxclust") - 1, None, _height(tree, k)
    best: tuple[float, np.ndarray, int] | None = None
    # Beyond ~2 sqrt(n) clusters the silhouette mostly rewards isolating single
    # actions of one job from each other.
    top = min(cfg.max_k, n - 1, max(4, int(2 * math.sqrt(n))))
    for k in range(2, top + 1):
        labels = fcluster(tree, t=k, criterion="maxclust") - 1
        if len(set(labels)) < 2:
            continue
        # Weighted by traffic: a cut that splits a busy job costs more than
        # one that isolates a rare action.
        score = float(np.average(silhouette_samples(dist, labels, metric="precomputed"), weights=weights))
        if best is None or score > best[0] + 1e-9:
            best = (score, labels, k)
    if best is None or best[0] < cfg.min_silhouette:
        return np.zeros(n, dtype=int), best[0] if best else None, float(tree[-1, 2])
    return best[1], best[0], _height(tree, best[2])


def _height(tree: np.ndarray, k: int) -> float:
    """Merge distance just below the cut into k clusters."""
    n = tree.shape[0] + 1
    return float(tree[n - k - 1, 2]) if n - k - 1 >= 0 else 0.0


def _kmeans_auto(x: np.ndarray, cfg: ClusterConfig, max_k: int = 10) -> np.ndarray:
    """KMeans with k by silhouette; one cluster when no split is convincing."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    if n < 10:
        if n < 2:
            return np.zeros(n, dtype=int)
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        dist = np.clip(1.0 - x @ x.T, 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        return fcluster(tree, t=1.0 - cfg.small_min_similarity, criterion="distance") - 1
    best: tuple[float, np.ndarray] | None = None
    for k in range(2, min(max_k, n - 1) + 1):
        labels = KMeans(k, n_init=3, random_state=cfg.seed).fit_predict(x)
        score = float(silhouette_score(x, labels))
        if best is None or score > best[0]:
            best = (score, labels)
    if best is None or best[0] < cfg.min_silhouette_leftover:
        return np.zeros(n, dtype=int)
    return best[1]


def cluster_calls(
    feats: Sequence[CallFeatures],
    docs: dict[str, str],
    embedder: Any,
    cfg: ClusterConfig | None = None,
) -> Clustering:
    """Assign each call a cluster number; see the module docstring."""
    cfg = cfg or ClusterConfig()
    rng = random.Random(cfg.seed)
    if not feats:
        return Clustering([], 0, np.zeros((0, 384), dtype=np.float32), None, 0)

    atoms: dict[tuple[str, tuple[str, ...]], Atom] = {}
    for i, f in enumerate(feats):
        key = (f.template, _action_key(f))
        atoms.setdefault(key, Atom(key)).members.append(i)
    templates_with_actions = {a.key[0] for a in atoms.values() if a.key[1][0] != NO_ACTION}
    # Pure no-call atoms inside tool-using sites are spread over that site's
    # tasks afterwards; elsewhere (a site that never calls tools) they are atoms.
    loose = [a for a in atoms.values() if a.key[1] == (NO_ACTION,) and a.key[0] in templates_with_actions]
    rest = [a for a in atoms.values() if not (a.key[1] == (NO_ACTION,) and a.key[0] in templates_with_actions)]

    # -- instruction embeddings: a sample of distinct masked instructions per atom
    budget = cfg.max_embed
    per_atom = max(1, min(cfg.sample_per_atom, budget // max(1, len(rest))))
    sample: list[list[str]] = []
    distinct_n: list[int] = []
    for atom in rest:
        distinct: dict[str, str] = {}
        raw: set[str] = set()
        for i in atom.members:
            distinct.setdefault(feats[i].instruction_key, feats[i].instruction)
            if len(raw) < cfg.min_distinct:
                raw.add(feats[i].instruction)
        texts = list(distinct.values())
        distinct_n.append(len(raw))
        sample.append(rng.sample(texts, per_atom) if len(texts) > per_atom else texts)
    loose_texts: dict[str, str] = {}
    for atom in loose:
        for i in atom.members:
            loose_texts.setdefault(feats[i].instruction_key, feats[i].instruction)
    room = max(0, budget - sum(len(v) for v in sample))
    if len(loose_texts) > room:
        keep = set(rng.sample(sorted(loose_texts), room))
        loose_texts = {k: v for k, v in loose_texts.items() if k in keep}
    tool_names = sorted({n for a in rest for n in a.key[1] if n != NO_ACTION})
    texts = list(dict.fromkeys([t for v in sample for t in v] + list(loose_texts.values())
                               + [docs.get(n, n) for n in tool_names]))
    vecs = embedder.encode(texts)
    index = {t: i for i, t in enumerate(texts)}
    dim = vecs.shape[1]
    for atom, smp in zip(rest, sample, strict=True):
        atom.instr = _unit(vecs[[index[t] for t in smp]].mean(0)) if smp else np.zeros(dim, np.float32)
        atom.style = float(np.mean([feats[i].style for i in atom.members[:50]]))
        names = [n for n in atom.key[1] if n != NO_ACTION]
        atom.action = _unit(vecs[[index[docs.get(n, n)] for n in names]].mean(0)) if names else None

    # An action seen with a single request (a tool offered for one call only)
    # is no evidence of a recurring job: such atoms join a task afterwards.
    tool_atoms: dict[str, int] = defaultdict(int)
    for a in rest:
        for name in set(a.key[1]) - {NO_ACTION}:
            tool_atoms[name] += 1
    fp_keys: dict[str, set[str]] = defaultdict(set)
    for f in feats:
        if len(fp_keys[f.fp]) < cfg.min_distinct:
            fp_keys[f.fp].add(f.instruction_key)
    fp_requests = {k: len(v) for k, v in fp_keys.items()}
    recurring = [
        d >= cfg.min_distinct
        for a, d in zip(rest, distinct_n, strict=True)
    ]
    # A request that brought its own tools (a tool set seen with too few
    # requests to be a catalogue, offering a called tool found in few tool sets) is grouped with its kind below, not with the
    # jobs of a shared tool catalogue, even when its function recurs.
    # Agents that pick tools per request (retrieval) also send rare tool sets,
    # but the tools they call recur across many of them: not brought along.
    sets_with: Counter[str] = Counter()
    for offered in {id(f.offered): f.offered for f in feats}.values():  # shared tuples: no hashing of each
        sets_with.update(offered)
    carried = [
        fp_requests[_main_fp(feats, a)] < cfg.min_distinct
        and all(sets_with[n] < cfg.min_distinct for n in a.key[1] if n != NO_ACTION)
        for a in rest
    ]
    core = [a for a, r, c in zip(rest, recurring, carried, strict=True) if r and not c]
    stray = [a for a, r, c in zip(rest, recurring, carried, strict=True) if not r and not c]
    own_tools = [a for a, c in zip(rest, carried, strict=True) if c]

    # Tools used in one tool loop serve one job: co-usage profiles (second
    # order, so ``ls`` and ``mv`` match through ``cd``) tie a toolkit together
    # even when descriptions and instructions differ.
    tool_ix = {n: i for i, n in enumerate(sorted({n for a in rest for n in a.key[1]} - {NO_ACTION}))}
    if not cfg.w_usage:
        tool_ix = {}
    co = np.eye(len(tool_ix), dtype=np.float32)
    for f in feats:
        used = [tool_ix[n] for n in set(f.called) | set(f.history) if n in tool_ix]
        for x in used:
            for y in used:
                if x != y:
                    co[x, y] += 1.0
    co = _unit(np.log1p(co))
    for atom in rest:
        idx = [tool_ix[n] for n in atom.key[1] if n in tool_ix]
        atom.usage = _unit(co[idx].sum(0)) if idx else np.zeros(len(tool_ix), np.float32)

    def similarity(xs: list[Atom], ys: list[Atom]) -> np.ndarray:
        ix = np.stack([a.instr for a in xs]).astype(np.float32)
        iy = np.stack([a.instr for a in ys]).astype(np.float32)
        hx = np.array([a.action is not None for a in xs])
        hy = np.array([a.action is not None for a in ys])
        ax = np.stack([a.action if a.action is not None else a.instr for a in xs]).astype(np.float32)
        ay = np.stack([a.action if a.action is not None else a.instr for a in ys]).astype(np.float32)
        ii = ix @ iy.T
        # Without an action on one side, the instruction stands in for it.
        aa = np.where(np.outer(hx, hy), ax @ ay.T, ii)
        tx = np.array([a.key[0] for a in xs])
        ty = np.array([a.key[0] for a in ys])
        fx = np.array([_main_fp(feats, a) for a in xs])
        fy = np.array([_main_fp(feats, a) for a in ys])
        ux = np.stack([a.usage for a in xs]).astype(np.float32)
        uy = np.stack([a.usage for a in ys]).astype(np.float32)
        sim = cfg.w_instruction * ii + cfg.w_action * aa + cfg.w_usage * (ux @ uy.T)
        sim += cfg.w_template * (tx[:, None] == ty[None, :]) + cfg.w_fingerprint * (fx[:, None] == fy[None, :])
        total = cfg.w_instruction + cfg.w_action + cfg.w_usage + cfg.w_template + cfg.w_fingerprint
        return sim / total

    groups: list[list[Atom]] = []
    silhouette = None
    cut = 0.0
    if core:
        dist = np.clip(1.0 - similarity(core, core), 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        weights = np.array([len(a.members) for a in core], dtype=np.float64) ** cfg.weight_power
        core_labels, silhouette, cut = _choose_cut(dist, cfg, weights)
        groups = [[] for _ in range(int(core_labels.max()) + 1)]
        for a, lab in zip(core, core_labels, strict=True):
            groups[lab].append(a)
    # Strays join the task they would have merged into below the cut.
    unplaced: list[Atom] = []
    if stray:
        if groups:
            sim = similarity(stray, core)
            owner = {id(a): g for g, members in enumerate(groups) for a in members}
            cols = np.array([owner[id(a)] for a in core])
            tmpl_groups: dict[str, set[int]] = defaultdict(set)
            for g, members in enumerate(groups):
                tmpl_groups.update({a.key[0]: tmpl_groups[a.key[0]] | {g} for a in members})
            for si, atom in enumerate(stray):
                own = tmpl_groups.get(atom.key[0], set())
                if len(own) == 1:
                    # The call site has one task so far: a rare action there is part of it.
                    groups[next(iter(own))].append(atom)
                    continue
                avg = np.array([sim[si, cols == g].mean() for g in range(len(groups))])
                g = int(np.argmax(avg))
                if 1.0 - avg[g] <= cut:
                    groups[g].append(atom)
                else:
                    unplaced.append(atom)
        else:
            unplaced = stray
    # What is left: per template, split only if clearly separable.
    by_template: dict[str, list[Atom]] = defaultdict(list)
    for atom in unplaced + own_tools:
        by_template[atom.key[0]].append(atom)
    for members in by_template.values():
        # What the call does (the called tool's description) and how its
        # functions are written say more than the wording of the request.
        x = np.hstack([
            cfg.w_leftover_instruction * np.stack([a.instr for a in members]),
            np.stack([a.action if a.action is not None else a.instr for a in members]),
            cfg.w_style * np.array([[a.style] for a in members]),
        ])
        labels = _kmeans_auto(x, cfg)
        start = len(groups)
        groups.extend([] for _ in range(int(labels.max()) + 1))
        for a, lab in zip(members, labels, strict=True):
            groups[start + lab].append(a)
    merges: list[str] = []
    n = len(groups)
    groups = merge_own_tool_parts(groups, feats, cfg.own_tools_style_gap, cfg.min_distinct)
    if len(groups) < n:
        merges.append(f"{n - len(groups) + 1} groups became one: calls of one system prompt whose requests "
                      "bring their own functions, written alike, are one job")
    n = len(groups)
    groups = merge_by_tool_loops(groups, feats, cfg.loop_merge_share)
    if len(groups) < n:
        merges.append(f"{n - len(groups)} group(s) joined another: their tools follow each other inside one "
                      "agent's tool loops")
    groups = move_by_sessions(groups, feats, cfg.session_moves)

    labels = [-1] * len(feats)
    k = len(groups)
    centroids = np.zeros((max(k, 1), dim), dtype=np.float32)
    for g, members in enumerate(groups):
        for a in members:
            centroids[g] += len(a.members) * a.instr
            for i in a.members:
                labels[i] = g
    centroids = _unit(centroids)

    # -- loose calls: nearest task of the same template, by instruction
    if loose:
        tmpl_groups: dict[str, set[int]] = defaultdict(set)
        for g, members in enumerate(groups):
            for a in members:
                tmpl_groups[a.key[0]].add(g)
        for atom in loose:
            allowed = sorted(tmpl_groups[atom.key[0]])
            sub = centroids[allowed]
            for i in atom.members:
                text = loose_texts.get(feats[i].instruction_key)
                if text is None or len(allowed) == 1:
                    # Beyond the embedding budget: the template's biggest task.
                    labels[i] = allowed[0] if len(allowed) == 1 else _biggest(labels, allowed)
                    continue
                labels[i] = allowed[int(np.argmax(sub @ vecs[index[text]]))]
    return Clustering(labels, k, centroids[:k], silhouette, len(texts), merges)


def _main_fp(feats: Sequence[CallFeatures], atom: Atom) -> str:
    return feats[atom.members[0]].fp


def _biggest(labels: list[int], allowed: list[int]) -> int:
    counts: dict[int, int] = defaultdict(int)
    for lab in labels:
        if lab in allowed:
            counts[lab] += 1
    return max(allowed, key=lambda c: counts[c])
