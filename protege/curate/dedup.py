"""Exact and near-duplicate detection over the input side of calls.

Exact: a hash of the canonical JSON of what the model was asked (messages,
tools, tool_choice, response_format; the model name is not part of the task).
Near: MinHash LSH (datasketch) over character 5-grams of the conversation
without its system prompt (every call of a call site shares that prompt, so
it would make all of them look alike). LSH only proposes candidates, at a
threshold below the target; the true Jaccard similarity of the shingle sets
decides. Near copies share a ``near_dup_group`` so a dataset split can keep
them on one side.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

INPUT_KEYS = ("messages", "tools", "tool_choice", "response_format")
SHINGLE = 5
_SCHEME = "affine32"


def exact_hash(request: dict[str, Any]) -> str:
    """Hash of the canonical JSON of the request's input side."""
    canon = {k: request.get(k) for k in INPUT_KEYS}
    blob = orjson.dumps(canon, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(blob).hexdigest()[:32]


def dedup_text(request: dict[str, Any]) -> str:
    """The variable part of a request: every message but the system prompt,
    including tool calls and tool results, lower-cased, whitespace collapsed."""
    parts: list[str] = []
    system: list[str] = []
    for m in request.get("messages") or []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        target = system if m.get("role") in ("system", "developer") else parts
        if isinstance(content, str) and content:
            target.append(content)
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict):
                target.append(f"{fn.get('name')}({fn.get('arguments')})")
    text = " ".join(parts) if parts else " ".join(system)
    return " ".join(text.lower().split())


def shingles(text: str) -> np.ndarray:
    """Sorted unique CRC32 hashes of the character 5-grams of ``text``."""
    if len(text) <= SHINGLE:
        grams = {text}
    else:
        grams = {text[i : i + SHINGLE] for i in range(len(text) - SHINGLE + 1)}
    return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint32, count=len(grams)))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


class NearDupIndex:
    """Assigns each text a near-duplicate group, incrementally.

    ``load_shingles(key)`` recovers the shingles of an entry added with
    ``add_existing`` (a trace curated by an earlier run) when it turns out to
    be a candidate; entries added with ``assign`` keep theirs in memory.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.9,
        candidate_threshold: float | None = None,
        num_perm: int = 64,
        load_shingles: Callable[[str], np.ndarray | None] | None = None,
    ) -> None:
        from datasketch import MinHash, MinHashLSH

        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.candidate_threshold = (
            candidate_threshold if candidate_threshold is not None else max(0.3, threshold - 0.15)
        )
        if not 0.0 < self.candidate_threshold <= threshold:
            raise ValueError("candidate threshold must be in (0, threshold]")
        self.num_perm = num_perm
        self._MinHash = MinHash
        self._perms = MinHash(num_perm=num_perm, seed=1, hashfunc=_identity).permutations
        self.lsh = MinHashLSH(threshold=self.candidate_threshold, num_perm=num_perm)
        self.group: dict[str, str] = {}
        self._shingles: dict[str, np.ndarray] = {}
        self._load = load_shingles
        self._parent: dict[str, str] = {}
        self.candidates_checked = 0
        self.candidates_accepted = 0

    # union-find over group ids: a text close to two groups joins them.
    def find(self, g: str) -> str:
        root = g
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while self._parent.get(g, g) != root:
            self._parent[g], g = root, self._parent[g]
        return root

    def _union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        self._parent[drop] = keep
        return keep

    def merged(self) -> dict[str, str]:
        """Group ids that were merged into another: old -> surviving id."""
        return {g: self.find(g) for g in self._parent if self.find(g) != g}

    def _minhash(self, sh: np.ndarray) -> Any:
        m = self._MinHash(
            num_perm=self.num_perm, seed=1, hashfunc=_identity, permutations=self._perms, scheme=_SCHEME
        )
        if sh.size:
            m.update_batch(sh.tolist())
        return m

    def signature(self, sh: np.ndarray) -> str:
        return base64.b64encode(self._minhash(sh).hashvalues.astype(np.uint32).tobytes()).decode()

    def add_existing(self, key: str, group: str, signature: str) -> None:
        hv = np.frombuffer(base64.b64decode(signature), dtype=np.uint32).astype(np.uint64)
        m = self._MinHash(num_perm=self.num_perm, seed=1, hashfunc=_identity, hashvalues=hv, scheme=_SCHEME)
        self.lsh.insert(key, m, check_duplication=False)
        self.group[key] = group

    def _shingles_of(self, key: str) -> np.ndarray | None:
        got = self._shingles.get(key)
        if got is None and self._load is not None:
            got = self._load(key)
            if got is not None:
                self._shingles[key] = got
        return got

    def assign(self, key: str, text: str) -> tuple[str, str]:
        """(near_dup_group, signature) for a new text; the group is ``key`` itself
        when nothing close enough is indexed yet."""
        sh = shingles(text)
        m = self._minhash(sh)
        group = key
        best = -1.0
        for cand in self.lsh.query(m):
            other = self._shingles_of(cand)
            if other is None:
                continue
            self.candidates_checked += 1
            sim = jaccard(sh, other)
            if sim >= self.threshold:
                self.candidates_accepted += 1
                g = self.find(self.group[cand])
                if best < 0:
                    group = g
                else:
                    group = self._union(group, g)
                best = max(best, sim)
        self.lsh.insert(key, m, check_duplication=False)
        self.group[key] = group
        self._shingles[key] = sh
        return self.find(group), base64.b64encode(m.hashvalues.astype(np.uint32).tobytes()).decode()


def _identity(x: Any) -> int:
    # Shingles are hashed (CRC32) before they reach MinHash.
    return int(x)
