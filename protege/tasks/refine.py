"""After the cut: passes over the clustering's groups that join what one call
site split (a site's own-tool parts, tool loops shared across groups) and move
atoms to the group their sessions belong to (``protege.tasks.cluster``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from protege.tasks.features import CallFeatures

# A ``protege.tasks.cluster.Atom`` (named here, not imported: cluster runs these passes).
Atom = Any
NO_ACTION = "∅"  # the action key of a call that calls no tool


def merge_own_tool_parts(
    parts: list[list[Atom]], feats: Sequence[CallFeatures], gap: float, recurring: int
) -> list[list[Atom]]:
    """Join the parts of one call site whose requests bring functions of their
    own (a tool set is offered, on average, by fewer than ``recurring`` calls:
    no shared catalogue), whose answers call them, and whose functions are
    written alike.

    Such requests share nothing but the prompt: the split between them follows
    the topics of their functions (geometry against finance), which says
    nothing about the job, filling a given function's arguments from the
    request. What does differ between jobs there is the kind of functions
    (a Python library against Java or JavaScript APIs), which shows in their
    identifier style; parts whose style differs by ``gap`` or more stay apart."""
    if gap <= 0 or len(parts) < 2:
        return parts
    out: list[list[Atom]] = []
    joined: dict[str, list[tuple[float, int]]] = defaultdict(list)  # template -> (style, index in out)
    for part in parts:
        n = sum(len(a.members) for a in part)
        templates = {a.key[0] for a in part}
        offered = {feats[i].offered for a in part for i in a.members}
        if len(templates) != 1 or any(a.action is None for a in part) or n > recurring * len(offered):
            out.append(part)
            continue
        style = sum(a.style * len(a.members) for a in part) / n
        same = joined[next(iter(templates))]
        for k, (other, at) in enumerate(same):
            if abs(other - style) < gap:
                m = sum(len(a.members) for a in out[at])
                same[k] = ((other * m + style * n) / (m + n), at)
                out[at] = out[at] + part
                break
        else:
            same.append((style, len(out)))
            out.append(part)
    return out


def merge_by_tool_loops(groups: list[list[Atom]], feats: Sequence[CallFeatures], share: float) -> list[list[Atom]]:
    """Join tasks whose tools follow each other inside one tool loop: the
    agent working on one instruction is doing one job, whichever tools it uses."""
    if share <= 0 or len(groups) < 2:
        return groups
    owner_votes: dict[str, Counter[int]] = defaultdict(Counter)
    size = [0] * len(groups)
    for g, members in enumerate(groups):
        for a in members:
            size[g] += len(a.members)
            for name in a.key[1]:
                if name != NO_ACTION:
                    owner_votes[name][g] += len(a.members)
    owner = {name: votes.most_common(1)[0][0] for name, votes in owner_votes.items()}
    links: Counter[tuple[int, int]] = Counter()
    for g, members in enumerate(groups):
        for a in members:
            for i in a.members:
                f = feats[i]
                if not f.called:
                    continue
                others = {owner[h] for h in f.history if h in owner} - {g}
                for o in others:
                    links[(min(g, o), max(g, o))] += 1
    parent = list(range(len(groups)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (a, b), n in links.items():
        # Relative to the bigger task, so a small mixed cluster cannot bridge two jobs.
        if n >= max(2, share * max(size[a], size[b])):
            parent[root(a)] = root(b)
    merged: dict[int, list[Atom]] = defaultdict(list)
    for g, members in enumerate(groups):
        merged[root(g)].extend(members)
    return list(merged.values())


def move_by_sessions(groups: list[list[Atom]], feats: Sequence[CallFeatures], rounds: int) -> list[list[Atom]]:
    """Move each tool-calling action to the task whose calls share most of its
    agent sessions (same prompt template), when that is not its own task.

    One agent run works one toolkit: ``cancel_order`` belongs with the trading
    tools it is used with, ``cancel_booking`` with the travel ones, even though
    both read alike and would otherwise form a task of their own. Only actions
    move (whole atoms), never a whole task, so two jobs that take turns in one
    session are not merged wholesale."""
    if rounds <= 0 or len(groups) < 2:
        return groups
    owner = {id(a): g for g, members in enumerate(groups) for a in members}
    # session -> atom -> calls
    sessions: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    atoms = [a for members in groups for a in members]
    for k, a in enumerate(atoms):
        for i in a.members:
            s = feats[i].session
            if s:
                sessions[(a.key[0], s)][k] += 1
    if not sessions:
        return groups
    by_atom: dict[int, list[Counter[int]]] = defaultdict(list)
    for per in sessions.values():
        if len(per) > 1:
            for k in per:
                by_atom[k].append(per)
    for _ in range(rounds):
        moved = 0
        for k, a in enumerate(atoms):
            if a.key[1] == (NO_ACTION,) or k not in by_atom:
                continue
            votes: Counter[int] = Counter()
            for per in by_atom[k]:
                for other, n in per.items():
                    if other != k:
                        votes[owner[id(atoms[other])]] += n
            if not votes:
                continue
            best, n = votes.most_common(1)[0]
            own = owner[id(a)]
            if best != own and n >= 2 and n > votes.get(own, 0):
                owner[id(a)] = best
                moved += 1
        if not moved:
            break
    out: dict[int, list[Atom]] = defaultdict(list)
    for a in atoms:
        out[owner[id(a)]].append(a)
    return [out[g] for g in sorted(out)]
