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
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

INPUT_KEYS = ("messages", "tools", "tool_choice", "response_format")
SHINGLE = 5
_SCHEME = "affine32"


def exact_hash(request: dict[str, Any], tools_digest: str | None | bool = False) -> str:
    """Hash of the canonical JSON of the request's input side, with the tools
    list stood for by its own digest (``parts.tools_digest``): a caller that
    already has it (one per distinct tools list) need not serialise the
    tools, which are most of an agent's request, again for every call."""
    if tools_digest is False:
        from protege.curate.parts import tools_digest as digest

        tools_digest = digest(request.get("tools"))
    canon = {k: request.get(k) for k in INPUT_KEYS if k != "tools"}
    canon["tools"] = tools_digest
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


_MULT = np.array([0x100000001B3**k % 2**64 for k in range(SHINGLE - 1, -1, -1)], dtype=np.uint64)


def shingles(text: str) -> np.ndarray:
    """Sorted unique 32-bit hashes of the character 5-grams of ``text``
    (a polynomial hash over code points, vectorised; stable across processes,
    so signatures stored by one run are comparable in the next)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size < SHINGLE:
        codes = np.concatenate([codes, np.zeros(SHINGLE - codes.size, dtype=np.uint64)])
    n = codes.size - SHINGLE + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(SHINGLE):
            h += codes[j : j + n] * _MULT[j]
    return np.unique(((h >> np.uint64(32)) ^ h).astype(np.uint32))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


class NearDupIndex:
    """Assigns each text a near-duplicate group, incrementally.

    Signatures are datasketch MinHashes; the LSH banding (bands and rows from
    datasketch's optimiser for the candidate threshold) is kept here so each
    bucket can be capped: templated traffic puts thousands of similar calls
    in one bucket, and an uncapped index turns quadratic. Candidates are
    ranked by their MinHash estimate and only the best ``max_checks`` pay
    for the exact Jaccard check.

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
        bucket_cap: int = 64,
        max_checks: int = 8,
        load_shingles: Callable[[str], np.ndarray | None] | None = None,
    ) -> None:
        from datasketch import MinHash
        from datasketch.lsh import _optimal_param
        from datasketch.minhash import _fmix

        self._fmix = _fmix  # datasketch's MurmurHash3 finalizer (the "affine32" pre-mix)

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
        self._a, self._b = (np.asarray(p, dtype=np.uint32) for p in self._perms)
        self.bands, self.rows = _optimal_param(self.candidate_threshold, num_perm, 0.5, 0.5)
        self._tables: list[dict[bytes, list[str]]] = [{} for _ in range(self.bands)]
        self.bucket_cap = bucket_cap
        self.max_checks = max_checks
        self.group: dict[str, str] = {}
        self._shingles: dict[str, np.ndarray] = {}
        self._hv: dict[str, np.ndarray] = {}
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

    def hashvalues(self, sh: np.ndarray) -> np.ndarray:
        """datasketch's "affine32" MinHash of the shingle hashes, computed in one
        numpy expression (``MinHash.update_batch`` loops in Python per shingle);
        a test checks both agree."""
        if not sh.size:
            return np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        hv = self._fmix(sh.astype(np.uint32).reshape(-1, 1), 32)
        with np.errstate(over="ignore"):
            return (hv * self._a + self._b).min(axis=0).astype(np.uint32)

    def signature(self, sh: np.ndarray) -> str:
        return base64.b64encode(self.hashvalues(sh).tobytes()).decode()

    def _band_keys(self, hv: np.ndarray) -> list[bytes]:
        r = self.rows
        return [hv[i * r : (i + 1) * r].tobytes() for i in range(self.bands)]

    def _insert(self, key: str, hv: np.ndarray) -> None:
        for table, bk in zip(self._tables, self._band_keys(hv), strict=True):
            bucket = table.get(bk)
            if bucket is None:
                table[bk] = [key]
            elif len(bucket) < self.bucket_cap:
                bucket.append(key)
        self._hv[key] = hv

    def _query(self, hv: np.ndarray) -> list[str]:
        found: set[str] = set()
        for table, bk in zip(self._tables, self._band_keys(hv), strict=True):
            bucket = table.get(bk)
            if bucket:
                found.update(bucket)
        return list(found)

    def add_existing(self, key: str, group: str, signature: str) -> None:
        self._insert(key, np.frombuffer(base64.b64decode(signature), dtype=np.uint32))
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
        return self.assign_hashed(key, sh, self.hashvalues(sh))

    def assign_hashed(self, key: str, sh: np.ndarray, hv: np.ndarray) -> tuple[str, str]:
        """``assign`` for a text whose shingles and MinHash values (``hashvalues``)
        were computed elsewhere (a curation worker process)."""
        group = key
        matched = False
        cands = self._query(hv)
        if cands:
            # The MinHash estimate is nearly free; only likely matches pay for the exact check.
            est = (np.stack([self._hv[c] for c in cands]) == hv).sum(axis=1)
            order = np.argsort(-est, kind="stable")
            # Estimates sit within ~0.1 of the truth at 64 permutations.
            floor = max(self.candidate_threshold, self.threshold - 0.1) * self.num_perm
            checks = 0
            for i in order:
                if est[i] < floor or checks >= self.max_checks:
                    break
                cand = cands[i]
                g = self.find(self.group[cand])
                if matched and g == self.find(group):
                    continue
                other = self._shingles_of(cand)
                if other is None:
                    continue
                checks += 1
                self.candidates_checked += 1
                if jaccard(sh, other) >= self.threshold:
                    self.candidates_accepted += 1
                    group = self._union(group, g) if matched else g
                    matched = True
        self._insert(key, hv)
        self._shingles[key] = sh
        self.group[key] = group
        return self.find(group), base64.b64encode(hv.tobytes()).decode()


def _identity(x: Any) -> int:
    # Shingles are hashed (CRC32) before they reach MinHash.
    return int(x)
