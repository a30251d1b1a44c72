"""Drift: has a task's traffic moved away from what its student learned, or
has the student got worse at it?

Two kinds of signal, two remedies:

* **input shift** (the student may be out of its depth): fingerprints unseen
  in training take a share of the task's recent traffic, the fingerprint mix
  moves (total-variation distance), or the centroid of the recent inputs'
  embeddings moves away from the training centroid -> retrain on fresh data;
* **quality drop** (the student is already hurting): the live validation rate
  falls (answers that failed validation and went to the teacher, traces
  ``served_by='fallback'``) or recent shadow agreement falls -> demote now,
  then retrain.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.flywheel.config import FlywheelConfig

if TYPE_CHECKING:
    from protege.store.db import TraceStore


@dataclass
class DriftResult:
    task_id: str
    action: str = "none"  # none | retrain | demote
    reasons: list[str] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "action": self.action, "reasons": self.reasons, "signals": self.signals}


def fingerprint_mix(requests: list[dict[str, Any]]) -> dict[str, int]:
    from protege.tasks.fingerprint import fingerprint

    return dict(Counter(fingerprint(r) for r in requests))


def tv_distance(a: dict[str, int], b: dict[str, int]) -> float:
    """Total-variation distance of two count vectors (0 equal, 1 disjoint)."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in keys)


def encode_vector(v: Any) -> str:
    import numpy as np

    return base64.b64encode(np.asarray(v, dtype=np.float32).tobytes()).decode()


def decode_vector(text: str | None) -> Any:
    import numpy as np

    return None if not text else np.frombuffer(base64.b64decode(text), dtype=np.float32)


def input_centroid(requests: list[dict[str, Any]]) -> Any:
    """Unit mean of the embeddings of the last user messages (None when empty)."""
    import numpy as np

    from protege.tasks.embed import Embedder
    from protege.tasks.features import last_user_message

    texts = [last_user_message(r) for r in requests]
    texts = [t for t in texts if t]
    if not texts:
        return None
    v = np.asarray(Embedder().encode(texts), dtype=np.float32).mean(axis=0)
    n = float(np.linalg.norm(v))
    return v / n if n else v


def served_counts(store: TraceStore, task_id: str, since: float) -> dict[str, int]:
    """Recent calls of a task by who served them. Student answers below the
    adapter's confidence floor went to the teacher by design: they count as
    ``deferred``, not as ``fallback`` (failed validation)."""
    from protege.store.schema import traces

    deferred = sa.or_(
        traces.c.fallback_reason.like("%low_confidence%"), traces.c.fallback_reason.like("%no_confidence%")
    )
    kind = sa.case((sa.and_(traces.c.served_by == "fallback", deferred), "deferred"), else_=traces.c.served_by)
    with store.read() as conn:
        rows = conn.execute(
            sa.select(kind, sa.func.count())
            .where(traces.c.task_id == task_id, traces.c.created_at >= since)
            .group_by(kind)
        ).all()
    return {r[0]: int(r[1]) for r in rows}


def shadow_stats(store: TraceStore, task_id: str, *, adapter: str | None = None, since: float = 0.0) -> dict[str, Any]:
    """Shadow comparisons of a task's student: how many, how many agreed, valid."""
    from protege.router.migrations import shadow_results as sr

    q = sa.select(sr.c.agree, sr.c.valid).where(sr.c.task_id == task_id, sr.c.created_at >= since)
    if adapter is not None:
        q = q.where(sr.c.adapter == adapter)
    with store.read() as conn:
        rows = conn.execute(q).all()
    judged = [r for r in rows if r.agree is not None]
    agree = sum(int(r.agree) for r in judged)
    return {
        "n": len(judged),
        "agree": agree,
        "agreement": agree / len(judged) if judged else None,
        "valid": sum(int(r.valid) for r in rows) / len(rows) if rows else None,
    }


def check_drift(
    store: TraceStore,
    task_id: str,
    state: dict[str, Any],
    cfg: FlywheelConfig,
    *,
    adapter_refs: tuple[str, ...] = (),
    now: float | None = None,
) -> DriftResult:
    """Compare the task's recent traffic and serving record with its training baseline."""
    now = time.time() if now is None else now
    since = max(float(state.get("trained_until") or 0.0), now - cfg.drift_window_s)
    res = DriftResult(task_id)

    # Quality first: a student that is failing live is demoted whatever its inputs.
    served = served_counts(store, task_id, since)
    answered = served.get("student", 0) + served.get("fallback", 0)
    if served.get("deferred"):
        res.signals["deferred_rate"] = round(served["deferred"] / (answered + served["deferred"]), 4)
    if answered >= cfg.drift_min_traces:
        rate = served.get("fallback", 0) / answered
        res.signals["fallback_rate"] = round(rate, 4)
        if rate > cfg.drift_max_fallback_rate:
            res.reasons.append(
                f"live validation rate fell: {rate:.1%} of {answered} student answers fell back to the teacher "
                f"(limit {cfg.drift_max_fallback_rate:.0%})"
            )
            res.action = "demote"
    for ref in adapter_refs:
        sh = shadow_stats(store, task_id, adapter=ref, since=since)
        if sh["n"] >= cfg.drift_min_traces and sh["agreement"] is not None:
            res.signals["shadow_agreement"] = round(sh["agreement"], 4)
            if sh["agreement"] < cfg.drift_min_agreement:
                res.reasons.append(
                    f"shadow agreement fell to {sh['agreement']:.1%} over {sh['n']} calls "
                    f"(limit {cfg.drift_min_agreement:.0%})"
                )
                res.action = "demote"

    # Input shift: the task's recent requests against what it was trained on.
    recent = [t.request for t in store.iter_traces(task_id=task_id, since=since)]
    res.signals["recent_traces"] = len(recent)
    if len(recent) < cfg.drift_min_traces:
        return res
    trained = json.loads(state.get("fingerprints") or "{}")
    mix = fingerprint_mix(recent)
    unseen = sum(n for fp, n in mix.items() if fp not in trained)
    share = unseen / len(recent)
    dist = tv_distance(mix, trained)
    res.signals.update(new_fingerprint_share=round(share, 4), mix_distance=round(dist, 4))
    shift: list[str] = []
    if trained and share >= cfg.drift_new_fingerprint_share:
        shift.append(f"{share:.0%} of recent calls come from call sites unseen in training")
    elif trained and dist >= cfg.drift_mix_distance:
        shift.append(f"the call-site mix moved (total-variation distance {dist:.2f})")
    if cfg.drift_embeddings and state.get("centroid"):
        import numpy as np

        base = decode_vector(state["centroid"])
        cur = input_centroid(recent)
        if base is not None and cur is not None and base.shape == cur.shape:
            d = float(1.0 - np.dot(base, cur))
            res.signals["centroid_distance"] = round(d, 4)
            if d >= cfg.drift_centroid_distance:
                shift.append(f"the inputs moved (embedding centroid distance {d:.2f})")
    if shift:
        res.reasons.extend(shift)
        if res.action == "none":
            res.action = "retrain"
    return res
