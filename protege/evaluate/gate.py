"""Release gate: may this adapter take traffic?

An adapter passes when the lower bound of the 95 % interval of its share of
teacher quality, its validity and its evidence clear the thresholds on its
newest evaluation, over the whole task or over the answers above a
confidence floor chosen on the validation split; every decision is stored.
The rules and the arithmetic behind them: docs/evaluation.md.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from protege.evaluate.bootstrap import Interval
from protege.evaluate.records import EvalReport, load_report

if TYPE_CHECKING:
    from protege.store.db import TraceStore

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
    confidence_floor: bool = field(
        default=True,
        metadata={"help": "when the whole task falls short, look for a confidence floor above which it passes"},
    )
    min_coverage: float = field(
        default=0.2, metadata={"help": "share of test answers a confidence floor must still serve"}
    )

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
class Floor:
    """A confidence floor and what the student scored at or above it."""

    min_confidence: float | None  # None: every answer is served
    served: int
    n: int
    share: Interval
    validity: float
    signal: str = "min_prob"  # the confidence signal the floor is on
    chosen_on: str = "test"  # "validation": chosen there, judged on test

    @property
    def coverage(self) -> float:
        return self.served / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_confidence": self.min_confidence,
            "served": self.served,
            "n": self.n,
            "coverage": round(self.coverage, 6),
            "share": self.share.to_dict(),
            "validity": self.validity,
            "signal": self.signal,
            "chosen_on": self.chosen_on,
        }


def _subset_share(st: np.ndarray, te: np.ndarray, n_resamples: int, alpha: float, seed: int) -> Interval:
    """student/teacher (sums) with a percentile-bootstrap interval."""
    k = len(st)
    den = float(te.sum())
    value = float(st.sum()) / den if den > 0 else float("nan")
    if k == 0:
        return Interval(value, float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, k, size=(n_resamples, k))
    num_s, den_s = st[idx].sum(axis=1), te[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den_s > 0, num_s / np.where(den_s > 0, den_s, 1), np.nan)
    ratio = ratio[~np.isnan(ratio)]
    if not len(ratio):
        return Interval(value, float("nan"), float("nan"))
    return Interval(value, float(np.quantile(ratio, alpha / 2)), float(np.quantile(ratio, 1 - alpha / 2)))


def choose_floor(
    selective: dict[str, Any], t: GateThresholds, *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[Floor | None, list[dict[str, Any]]]:
    """The lowest confidence floor whose served answers pass the gate's checks,
    scanning from the most confident answers down and stopping at the first
    failure; and the scanned curve (floor, coverage, share) for the report."""
    t = t.resolved()
    conf = np.asarray([-1.0 if c is None else float(c) for c in selective.get("confidence") or []])
    st = np.asarray(selective.get("student") or [], dtype=float)
    te = np.asarray(selective.get("teacher") or [], dtype=float)
    valid = np.asarray(selective.get("valid") or [], dtype=float)
    n = len(conf)
    if n == 0 or not (len(st) == len(te) == len(valid) == n):
        return None, []
    scored = ~(np.isnan(st) | np.isnan(te))  # examples without a score on the basis count as served, unscored
    best: Floor | None = None
    curve: list[dict[str, Any]] = []
    for floor in sorted({float(c) for c in conf if c >= 0}, reverse=True):
        served = conf >= floor
        k = int(served.sum())
        sel = served & scored
        share = _subset_share(st[sel], te[sel], n_resamples, alpha, seed)
        v = valid[served]
        validity = float(np.nanmean(v)) if len(v) and not np.isnan(v).all() else float("nan")
        cand = Floor(floor, k, n, share, validity)
        curve.append({"min_confidence": floor, "served": k, "coverage": round(k / n, 6), "share": share.to_dict()})
        if int(sel.sum()) < (t.min_test_examples or 0):
            continue  # not enough evidence yet: keep widening
        ok = (
            not math.isnan(share.low)
            and share.low >= t.min_share
            and share.width <= t.max_ci_width
            and not math.isnan(validity)
            and validity >= t.min_validity
        )
        if not ok:
            break
        best = cand
    return best, curve


def choose_validated_floor(
    selective: dict[str, Any], t: GateThresholds, *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[Floor | None, list[dict[str, Any]]]:
    """A floor chosen on the validation split and judged once on the test split.

    On the validation answers: the signal that ranks right answers above wrong
    ones best (lowest AURC), and the lowest floor on it above which the
    student stays right at least as often as halfway between the bar and
    perfect (``protege.evaluate.selective.floor_for``). On the test answers
    at or above that floor: the share of teacher quality with its interval,
    for the usual checks. Nothing about the floor is chosen on the answers
    that judge it. Returns (floor or None, per-signal comparison)."""
    from protege.evaluate import selective as S

    t = t.resolved()
    val = selective.get("validation") or {}
    vst = np.asarray(val.get("student") or [], dtype=float)
    vte = np.asarray(val.get("teacher") or [], dtype=float)
    if not len(vst) or len(vst) != len(vte):
        return None, []
    right = np.where(np.isnan(vst) | np.isnan(vte), np.nan, (vst >= vte).astype(float))
    vsig = {k: v for k, v in (val.get("signals") or {}).items() if len(v) == len(vst)}
    if not vsig and val.get("confidence"):
        vsig = {"min_prob": val["confidence"]}
    tsig = dict(selective.get("signals") or {})
    if "min_prob" not in tsig and selective.get("confidence"):
        tsig["min_prob"] = selective["confidence"]
    vsig = {k: v for k, v in vsig.items() if k in tsig}
    if not vsig:
        return None, []
    table = S.compare(vsig, right)
    signal = S.best_signal(vsig, right)
    target = 1.0 - (1.0 - t.min_share) / 2
    cut = S.floor_for(vsig[signal], right, target)
    curve = [{"signal": k, "validation": v, "chosen": k == signal} for k, v in table.items()]
    if cut is None:
        return None, curve
    conf = np.asarray([-np.inf if c is None else float(c) for c in tsig[signal]], dtype=float)
    st = np.asarray(selective.get("student") or [], dtype=float)
    te = np.asarray(selective.get("teacher") or [], dtype=float)
    valid = np.asarray(selective.get("valid") or [], dtype=float)
    if not (len(conf) == len(st) == len(te) == len(valid)):
        return None, curve
    served = conf >= cut
    sel = served & ~(np.isnan(st) | np.isnan(te))
    share = _subset_share(st[sel], te[sel], n_resamples, alpha, seed)
    v = valid[served]
    validity = float(np.nanmean(v)) if len(v) and not np.isnan(v).all() else float("nan")
    floor = Floor(cut, int(served.sum()), len(conf), share, validity, signal=signal, chosen_on="validation")
    curve.append({"min_confidence": cut, "signal": signal, "served": floor.served,
                  "coverage": round(floor.coverage, 6), "share": share.to_dict(), "target_on_validation": target})
    return floor, curve


def floor_checks(floor: Floor, t: GateThresholds, basis: str, metric: str) -> list[Check]:
    """The gate's checks on the answers at or above ``floor``, plus its coverage."""
    where = f"at {floor.signal} >= {floor.min_confidence:.3g}"
    sh = floor.share
    return [
        Check(
            "share_of_teacher",
            not math.isnan(sh.low) and sh.low >= t.min_share,
            sh.low,
            t.min_share,
            f"{where}, lower 95% bound of the share of teacher quality on {metric} ({basis}) is {_fmt(sh.low)}"
            f" (point {_fmt(sh.value)}); needs >= {t.min_share:.3f}",
        ),
        Check(
            "validity",
            not math.isnan(floor.validity) and floor.validity >= t.min_validity,
            floor.validity,
            t.min_validity,
            f"{where}, validity of the student is {_fmt(floor.validity)}; needs >= {t.min_validity:.3f}",
        ),
        Check(
            "test_examples",
            floor.served >= (t.min_test_examples or 0),
            float(floor.served),
            float(t.min_test_examples or 0),
            f"{floor.served} test answers {where}; needs >= {t.min_test_examples}",
        ),
        Check(
            "ci_width",
            not math.isnan(sh.width) and sh.width <= t.max_ci_width,
            sh.width,
            t.max_ci_width,
            f"{where}, the share's interval is {_fmt(sh.width)} wide; needs <= {t.max_ci_width:.3f}",
        ),
        Check(
            "coverage",
            floor.coverage >= t.min_coverage,
            floor.coverage,
            t.min_coverage,
            f"the floor serves {floor.coverage:.1%} of test answers ({floor.served} of {floor.n});"
            f" needs >= {t.min_coverage:.1%}",
        ),
    ]


@dataclass
class GateDecision:
    task_id: str
    adapter_id: str | None
    evaluation_id: str | None
    decision: str  # "pass" | "fail"
    checks: list[Check]
    thresholds: GateThresholds
    status: str | None = None  # the registry status set on a pass
    floor: Floor | None = None  # on a pass with a confidence floor: the floor
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
            "floor": self.floor.to_dict() if self.floor else None,
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
    store: TraceStore,
    task_id: str,
    adapter_id: str | None,
    *,
    min_share: float = 0.95,
    min_validity: float = 0.99,
    min_test_examples: int | None = None,
    max_ci_width: float = 0.20,
    to: str = "shadow",
    confidence_floor: bool = True,
    min_coverage: float = 0.2,
    report: EvalReport | None = None,
    evaluation_id: str | None = None,
) -> GateDecision:
    """Decide on the newest evaluation of ``adapter_id`` (or the given one),
    store the decision and, on a pass, set the adapter's registry status and
    its serving confidence floor (none when the whole task passed)."""
    if to not in STATUSES:
        raise ValueError(f"--to must be one of {', '.join(STATUSES)}, not {to!r}")
    from protege.ids import new_id

    thresholds = GateThresholds(
        min_share=min_share,
        min_validity=min_validity,
        min_test_examples=min_test_examples,
        max_ci_width=max_ci_width,
        to=to,
        confidence_floor=confidence_floor,
        min_coverage=min_coverage,
    ).resolved()
    if adapter_id and report is None:
        adapter_id = _registry_id(store, task_id, adapter_id)
    if report is None:
        report = load_report(store, evaluation_id=evaluation_id, task_id=task_id, adapter_id=adapter_id)
    if report is not None and adapter_id is None:
        adapter_id = report.adapter_id
    checks = checks_for(report, thresholds)
    passed = all(c.ok for c in checks)
    floor: Floor | None = None
    curve: list[dict[str, Any]] = []
    if not passed and thresholds.confidence_floor and report is not None and report.selective:
        alpha = float(report.config.get("alpha") or 0.05)
        if report.selective.get("validation"):
            floor, curve = choose_validated_floor(report.selective, thresholds, alpha=alpha)
        else:  # an evaluation without validation answers: scanned on the test split
            floor, curve = choose_floor(report.selective, thresholds, alpha=alpha)
        if floor is None and report.selective.get("validation"):
            checks.append(Check("confidence_floor", False, None, thresholds.min_share,
                                "no confidence floor: on the validation split even the surest answers "
                                "fall short of the bar"))
        elif floor is None:
            enough = [p for p in curve if p["served"] >= (thresholds.min_test_examples or 0)]
            best = max(enough, key=lambda p: p["share"].get("low") or 0.0, default=None)
            at = (f" (best lower bound over >= {thresholds.min_test_examples} answers:"
                  f" {_fmt(best['share'].get('low'))}, serving {best['coverage']:.0%})" if best else "")
            checks.append(Check("confidence_floor", False, None, thresholds.min_share,
                                "no confidence floor passes either" + at))
        else:
            basis = str(report.selective.get("basis") or report.share_basis or "reference")
            fchecks = floor_checks(floor, thresholds, basis, report.primary_metric)
            if all(c.ok for c in fchecks):
                checks, passed = fchecks, True
            else:  # a floor passes but serves too little
                checks += [c for c in fchecks if not c.ok]
                floor = None
    decision = GateDecision(
        task_id=task_id,
        adapter_id=adapter_id,
        evaluation_id=report.id if report else None,
        decision="pass" if passed else "fail",
        checks=checks,
        thresholds=thresholds,
        floor=floor,
    )
    decision.id = new_id()
    if passed and adapter_id:
        # The floor first: a gateway that sees the new status must see its floor too.
        _set_serving(store, adapter_id, decision)
        decision.status = _set_registry_status(store, adapter_id, to, checks)
    save_decision(store, decision, report, curve)
    return decision


def _set_serving(store: TraceStore, adapter_id: str, decision: GateDecision) -> None:
    from protege.registry import Registry

    f = decision.floor
    serving = {
        "min_confidence": f.min_confidence if f else None,
        "signal": f.signal if f else None,
        "coverage": f.coverage if f else 1.0,
        "gate_decision": decision.id,
        "evaluation_id": decision.evaluation_id,
    }
    try:
        Registry(store).update_metrics(adapter_id, {"serving": serving})
    except (KeyError, ValueError):  # not a registered adapter (a directory): nothing to record
        pass


def _registry_id(store: TraceStore, task_id: str, adapter: str) -> str:
    """Evaluations are stored under the registry id; accept a version ("v2") too."""
    from protege.evaluate.runner import resolve_adapter

    try:
        ref = resolve_adapter(store, task_id, adapter)
    except ValueError:
        return adapter
    return ref.id if ref else adapter


def _set_registry_status(store: TraceStore, adapter_id: str, to: str, checks: list[Check]) -> str | None:
    from protege.registry import Registry

    reason = "gate passed: " + "; ".join(c.message for c in checks)
    Registry(store).set_status(adapter_id, to, reason)
    return to


def save_decision(
    store: TraceStore, decision: GateDecision, report: EvalReport | None = None, curve: list[dict[str, Any]] | None = None
) -> str:
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
        "floor": decision.floor.to_dict() if decision.floor else None,
        "floor_curve": curve or None,
    }
    with store.write() as conn:
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
    store: TraceStore, task_id: str | None = None, adapter_id: str | None = None
) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from protege.evaluate.migrations import gate_decisions as t

    q = sa.select(t)
    if task_id:
        q = q.where(t.c.task_id == task_id)
    if adapter_id:
        q = q.where(t.c.adapter_id == adapter_id)
    q = q.order_by(t.c.created_at.desc(), t.c.id.desc())
    with store.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["reasons"] = json.loads(r["reasons"])
        r["thresholds"] = json.loads(r["thresholds"])
    return rows
