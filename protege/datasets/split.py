"""Train / validation / test assignment: grouped, then stratified.

Rows that must stay together (one agent session, one near-duplicate group,
identical inputs) are joined by union-find into groups; whole groups are then
dealt to the splits greedily so that each split's share of every stratum (tool
name or label) stays close to its target fraction.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence

SPLITS = ("train", "validation", "test")


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Deterministic root choice keeps group ids stable across runs.
            if str(rb) < str(ra):
                ra, rb = rb, ra
            self.parent[rb] = ra


def group_rows(keys_per_row: Sequence[Sequence[Hashable]]) -> list[int]:
    """Group index per row: rows sharing any key (session id, near-dup group,
    input hash, ...) end up in the same group, transitively."""
    uf = UnionFind()
    for i, keys in enumerate(keys_per_row):
        uf.find(("row", i))
        for k in keys:
            if k is not None:
                uf.union(("row", i), ("key", k))
    roots: dict[Hashable, int] = {}
    out = []
    for i in range(len(keys_per_row)):
        r = uf.find(("row", i))
        out.append(roots.setdefault(r, len(roots)))
    return out


RARE = "\0rare"


def stratified_group_split(
    strata: Sequence[str],
    groups: Sequence[int],
    fractions: dict[str, float],
    *,
    seed: int = 0,
) -> list[str]:
    """A split name per row. No group spans two splits; each split gets close
    to ``fractions[split]`` of the rows of every stratum. Deterministic in
    ``seed``."""
    names = [s for s in fractions if fractions[s] > 0]
    if not names:
        raise ValueError("every split fraction is zero")
    total_frac = sum(fractions[s] for s in names)
    frac = {s: fractions[s] / total_frac for s in names}
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    # A stratum too small to have a row in every split (a function called
    # once, as when each request brings its own) would always land in the
    # biggest split: such strata are balanced together, as one.
    sizes_of = Counter(strata)
    smallest = min(frac.values())
    strata = [RARE if sizes_of[k] * smallest < 1 else k for k in strata]
    strata_total = Counter(strata)
    n = len(strata)
    group_strata = {g: Counter(strata[i] for i in rows) for g, rows in members.items()}

    order = list(members)
    random.Random(seed).shuffle(order)
    # Big groups first: they are the hard ones to place; small ones fill gaps.
    order.sort(key=lambda g: -len(members[g]))

    counts = {s: Counter() for s in names}
    sizes = dict.fromkeys(names, 0)
    assigned: dict[int, str] = {}
    for g in order:
        gs, gsize = group_strata[g], len(members[g])
        best, best_cost = names[0], float("inf")
        for s in names:
            cost = 0.0
            for k, c in gs.items():
                # Only the strata this group touches change; compare their error.
                share = (counts[s][k] + c) / strata_total[k]
                cost += (share - frac[s]) ** 2 - (counts[s][k] / strata_total[k] - frac[s]) ** 2
            size_share = (sizes[s] + gsize) / n
            cost += (size_share - frac[s]) ** 2 - (sizes[s] / n - frac[s]) ** 2
            if cost < best_cost - 1e-12:
                best, best_cost = s, cost
        assigned[g] = best
        counts[best].update(gs)
        sizes[best] += gsize
    return [assigned[g] for g in groups]
