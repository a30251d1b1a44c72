"""Release gate: may this adapter take traffic?

An adapter passes only when all of these hold on its newest evaluation:

* **share of teacher quality**: the *lower bound* of the 95 % interval of
  student / teacher on the task's primary metric is at least ``min_share``
  (0.95): the student must be shown to be almost as good, not merely look so;
* **validity**: the share of the student's answers that parse and satisfy
  their schema is at least ``min_validity`` (0.99), since every invalid answer
  costs a fallback to the teacher;
* **enough evidence**: at least ``min_test_examples`` test examples, and an
  interval no wider than ``max_ci_width``.

Why the sample-size rule: a percentile bootstrap collapses to [1, 1] when the
student gets every example right, however few there are. The "rule of three"
says that with n examples and no failure, the 95 % upper bound of the failure
rate is about 3 / n; to support a share of 0.95 that bound must be 0.05 or
less, so n >= 3 / (1 - min_share) = 60. The default minimum is that figure
(never under 30). The width bound (0.20) rejects intervals so wide that their
lower bound clearing the threshold says more about noise than about the
student: at n = 60 and 90 % accuracy the interval is already about 0.15 wide.

Every decision, pass or fail, is stored in ``gate_decisions`` with the
thresholds and the evidence; on a pass the adapter registry (when installed)
moves the adapter to ``shadow`` or ``promoted``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from protege.evaluate.runner import EvalReport, load_report

STATUSES = ("shadow", "promoted")


def default_min_examples(min_share: float) -> int:
    if min_share >= 1.0:
        return 300
    return max(30, math.ceil(3.0 / (1.0 - min_share) - 1e-9))


@dataclass(kw_only=True)
class GateThresholds:
    min_share: float = field(
        default=0.95, metadata={"help": "lower CI bound of student/teacher on the primary metric"}
    )
    min_validity: float = field(default=0.99, metadata={"help": "share of parseable, schema-valid answers"})
    min_test_examples: int | None = field(
        default=None,
        metadata={"help": "test examples needed (default: rule of three, max(30, 3/(1-min_share)))"},
    )
    max_ci_width: float = field(default=0.20, metadata={"help": "widest acceptable interval of the share"})
    to: str = field(default="shadow", metadata={"help": "status on a pass: shadow or promoted"})

    def resolved(self) -> GateThresholds:
        if self.min_test_examples is None:
            return GateThresholds(
                **{**asdict(self), "min_test_examples": default_min_examples(self.min_share)}
            )
        return self


@dataclass
class Check:
    name: str
    ok: bool
    value: float | None
    threshold: float
    message: str

    @property
    def gap(self) -> float | None:
        """How far the value is from passing (positive: short by that much)."""
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return None
        if self.name == "ci_width":
            return max(0.0, self.value - self.threshold)
        return max(0.0, self.threshold - self.value)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gap"] = self.gap
        if isinstance(d["value"], float) and math.isnan(d["value"]):
            d["value"] = None
        return d


@dataclass
class GateDecision:
    task_id: str
    adapter_id: str | None
    evaluation_id: str | None
    decision: str  # "pass" | "fail"
    checks: list[Check]
    thresholds: GateThresholds
    status: str | None = None  # the registry status set on a pass
    id: str | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def passed(self) -> bool:
        return self.decision == "pass"

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "adapter_id": self.adapter_id,
            "evaluation_id": self.evaluation_id,
            "decision": self.decision,
            "status": self.status,
            "checks": [c.to_dict() for c in self.checks],
            "thresholds": asdict(self.thresholds),
            "created_at": self.created_at,
        }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def checks_for(report: EvalReport | None, t: GateThresholds) -> list[Check]:
    if report is None:
        return [
            Check("evaluation", False, None, 1, "no evaluation of this adapter: run `protege eval` first")
        ]
    out: list[Check] = []
    share = report.share_of_teacher
    low = share.low if share else None
    basis = f" ({report.share_basis})" if report.share_basis else ""
    out.append(
        Check(
            "share_of_teacher",
            low is not None and not math.isnan(low) and low >= t.min_share,
            low,
            t.min_share,
            f"lower 95% bound of the share of teacher quality on {report.primary_metric}{basis} is {_fmt(low)}"
            f" (point {_fmt(share.value if share else None)}); needs >= {t.min_share:.3f}",
        )
    )
    validity = report.validity
    out.append(
        Check(
            "validity",
            validity is not None and not math.isnan(validity) and validity >= t.min_validity,
            validity,
            t.min_validity,
            f"{report.validity_metric} of the student is {_fmt(validity)}; needs >= {t.min_validity:.3f}",
        )
    )
    n = report.n_examples
    out.append(
        Check(
            "test_examples",
            n >= (t.min_test_examples or 0),
            float(n),
            float(t.min_test_examples or 0),
            f"{n} test examples; needs >= {t.min_test_examples} for the interval to mean something",
        )
    )
    width = share.width if share else None
    out.append(
        Check(
            "ci_width",
            width is not None and not math.isnan(width) and width <= t.max_ci_width,
            width,
            t.max_ci_width,
            f"the share's interval is {_fmt(width)} wide; needs <= {t.max_ci_width:.3f}",
        )
    )
    return out


def gate(
    store: Any,
    task_id: str,
    adapter_id: str | None,
    *,
    min_share: float = 0.95,
    min_validity: float = 0.99,
    min_test_examples: int | None = None,
    max_ci_width: float = 0.20,
    to: str = "shadow",
    report: EvalReport | None = None,
    evaluation_id: str | None = None,
) -> GateDecision:
    """Decide on the newest evaluation of ``adapter_id`` (or the given one),
    store the decision and, on a pass, set the adapter's registry status."""
    if to not in STATUSES:
        raise ValueError(f"--to must be one of {', '.join(STATUSES)}, not {to!r}")
    thresholds = GateThresholds(
        min_share=min_share,
        min_validity=min_validity,
        min_test_examples=min_test_examples,
        max_ci_width=max_ci_width,
        to=to,
    ).resolved()
    if adapter_id and report is None:
        adapter_id = _registry_id(store, task_id, adapter_id)
    if report is None:
        report = load_report(store, evaluation_id=evaluation_id, task_id=task_id, adapter_id=adapter_id)
    if report is not None and adapter_id is None:
        adapter_id = report.adapter_id
    checks = checks_for(report, thresholds)
    passed = all(c.ok for c in checks)
    decision = GateDecision(
        task_id=task_id,
        adapter_id=adapter_id,
        evaluation_id=report.id if report else None,
        decision="pass" if passed else "fail",
        checks=checks,
        thresholds=thresholds,
    )
    if passed and adapter_id:
        decision.status = _set_registry_status(store, adapter_id, to, checks)
    save_decision(store, decision, report)
    return decision


def _registry_id(store: Any, task_id: str, adapter: str) -> str:
    """Evaluations are stored under the registry id; accept a version ("v2") too."""
    from protege.evaluate.runner import resolve_adapter

    try:
        ref = resolve_adapter(store, task_id, adapter)
    except ValueError:
        return adapter
    return ref.id if ref else adapter


def _set_registry_status(store: Any, adapter_id: str, to: str, checks: list[Check]) -> str | None:
    try:
        from protege.registry import Registry
    except ImportError:
        return None
    reason = "gate passed: " + "; ".join(c.message for c in checks)
    Registry(store).set_status(adapter_id, to, reason)
    return to


def save_decision(store: Any, decision: GateDecision, report: EvalReport | None = None) -> str:
    from protege.evaluate.migrations import gate_decisions
    from protege.ids import new_id

    decision.id = decision.id or new_id()
    evidence = {
        "checks": [c.to_dict() for c in decision.checks],
        "status": decision.status,
        "share_of_teacher": report.share_of_teacher.to_dict() if report and report.share_of_teacher else None,
        "share_basis": report.share_basis if report else None,
        "primary_metric": report.primary_metric if report else None,
        "n_examples": report.n_examples if report else None,
        "dataset_hash": report.dataset_hash if report else None,
    }
    with store.engine.begin() as conn:
        conn.execute(
            gate_decisions.insert().values(
                id=decision.id,
                task_id=decision.task_id,
                adapter_id=decision.adapter_id,
                evaluation_id=decision.evaluation_id,
                decision=decision.decision,
                reasons=json.dumps(evidence),
                thresholds=json.dumps(asdict(decision.thresholds)),
                created_at=decision.created_at,
            )
        )
    return decision.id


def list_decisions(
    store: Any, task_id: str | None = None, adapter_id: str | None = None
) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from protege.evaluate.migrations import gate_decisions as t

    q = sa.select(t)
    if task_id:
        q = q.where(t.c.task_id == task_id)
    if adapter_id:
        q = q.where(t.c.adapter_id == adapter_id)
    q = q.order_by(t.c.created_at.desc(), t.c.id.desc())
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["reasons"] = json.loads(r["reasons"])
        r["thresholds"] = json.loads(r["thresholds"])
    return rows
