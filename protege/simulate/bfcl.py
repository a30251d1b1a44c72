"""Drive BFCL conversations through an OpenAI-compatible endpoint (the
gateway) as a real agent would, and score the agent with BFCL's rules.

Single-turn entries: one call, scored against BFCL's possible answers (every
ground-truth call matched by one predicted call, each argument among its
acceptable values). Multi-turn entries: the agent loop runs for real — each
tool call is executed on BFCL's API simulators and its result sent back — and
an entry succeeds when, after every turn, the simulators' state equals the
state the ground-truth calls produce and the ground truth's results appear
among the agent's (BFCL's state and response checks).
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from protege.importers import bfcl as B
from protege.importers.bfcl import data as BD
from protege.importers.bfcl import traces as BT
from protege.safejson import json_loads


@dataclass(kw_only=True)
class SimulateConfig:
    categories: list[str] = field(metadata={"help": "BFCL categories to drive"})
    limit: int | None = field(default=None, metadata={"help": "first N entries per category"})
    offset: int = field(default=0, metadata={"help": "skip the first N entries per category"})
    model: str = field(default=B.DEFAULT_MODEL, metadata={"help": "model name the agent asks for"})
    system_prompt: str = field(default=B.DEFAULT_SYSTEM_PROMPT, metadata={"help": "agent system prompt"})
    max_steps: int = field(default=12, metadata={"help": "tool-calling steps per user turn before giving up"})
    suites: tuple[str, ...] = field(
        default=(), metadata={"help": "multi-turn: the API suites the agent offers (default: the entry's own)"}
    )


@dataclass
class EntryResult:
    category: str
    entry_id: str
    success: bool
    calls: int
    llm_calls: int
    errors: list[str] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)


@dataclass
class SimulateReport:
    results: list[EntryResult] = field(default_factory=list)
    seconds: float = 0.0

    def by_category(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            c = out.setdefault(r.category, {"entries": 0, "success": 0, "llm_calls": 0, "errors": 0})
            c["entries"] += 1
            c["success"] += int(r.success)
            c["llm_calls"] += r.llm_calls
            c["errors"] += int(bool(r.errors))
        for c in out.values():
            c["success_rate"] = c["success"] / c["entries"] if c["entries"] else 0.0
        return out

    @property
    def success_rate(self) -> float:
        return sum(r.success for r in self.results) / len(self.results) if self.results else 0.0

    def to_dict(self) -> dict[str, Any]:
        served: Counter[str] = Counter()
        for r in self.results:
            served.update(r.served_by)
        return {
            "entries": len(self.results),
            "success_rate": self.success_rate,
            "llm_calls": sum(r.llm_calls for r in self.results),
            "served_by": dict(served),
            "seconds": self.seconds,
            "by_category": self.by_category(),
        }


# -- scoring -------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """BFCL's string standardisation: case, spaces and most punctuation ignored."""
    if isinstance(value, str):
        return re.sub(r"[ ,./\-_*^]", "", value).lower().replace("'", '"')
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _value_ok(value: Any, options: list[Any]) -> bool:
    nv = _norm(value)
    for opt in options:
        if opt == "":
            continue
        if isinstance(opt, dict) and isinstance(value, dict):
            if all(
                (k in value and _value_ok(value[k], o if isinstance(o, list) else [o]))
                or (k not in value and isinstance(o, list) and "" in o)
                for k, o in opt.items()
            ) and set(value) <= set(opt):
                return True
        elif _norm(opt) == nv:
            return True
    return False


def _call_ok(args: dict[str, Any], options: dict[str, list[Any]]) -> bool:
    if set(args) - set(options):
        return False
    for param, opts in options.items():
        opts = opts if isinstance(opts, list) else [opts]
        if param in args:
            if not _value_ok(args[param], opts):
                return False
        elif "" not in opts:
            return False
    return True


def single_turn_success(message: dict[str, Any], ground_truth: list[dict[str, Any]], names: dict[str, str]) -> bool:
    """Every ground-truth call matched by exactly one predicted call."""
    calls = []
    for c in message.get("tool_calls") or []:
        fn = c.get("function") or {}
        try:
            args = json_loads(fn.get("arguments") or "{}")
        except ValueError:
            return False
        calls.append((names.get(fn.get("name"), fn.get("name")), args if isinstance(args, dict) else {}))
    if not ground_truth:
        return not calls
    if len(calls) != len(ground_truth):
        return False
    remaining = list(calls)
    for gt in ground_truth:
        (fname, options), = gt.items()
        hit = next((i for i, (n, a) in enumerate(remaining) if n == fname and _call_ok(a, options)), None)
        if hit is None:
            return False
        remaining.pop(hit)
    return True


def _state(sims: B.Simulators) -> dict[str, Any]:
    out = {}
    for cls_name, inst in sims.instances.items():
        attrs = {}
        for k, v in vars(inst).items():
            if k.startswith("_"):
                continue
            try:
                attrs[k] = json.loads(json.dumps(v, default=repr))
            except (TypeError, ValueError):
                attrs[k] = repr(v)
        out[cls_name] = attrs
    return out


# -- the agent ---------------------------------------------------------------------


def _chat(client: Any, request: dict[str, Any], session: str) -> tuple[dict[str, Any], str]:
    """One LLM call through the endpoint; returns the assistant message and who served it."""
    kwargs = {k: v for k, v in request.items() if k in ("model", "messages", "tools")}
    raw = client.chat.completions.with_raw_response.create(
        **kwargs, extra_headers={"X-Protege-Session": session, "X-Protege-Client": "bfcl-agent"}
    )
    resp = raw.parse()
    served = raw.headers.get("x-protege-served-by", "teacher")
    msg = resp.choices[0].message
    out: dict[str, Any] = {"role": "assistant", "content": msg.content}
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in msg.tool_calls
        ]
    return out, served


def _run_single(client: Any, category: str, entry: dict[str, Any], index: int, cfg: SimulateConfig,
                source: str) -> EntryResult:
    icfg = B.BfclImportConfig(model=cfg.model, system_prompt=cfg.system_prompt, suites=cfg.suites)
    ex = B.entry_exchanges(category, entry, index, icfg, source)[0]
    meta = ex.meta["bfcl"]
    res = EntryResult(category, entry["id"], False, 0, 1)
    try:
        msg, served = _chat(client, ex.request, meta["session_id"])
    except Exception as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
        return res
    res.served_by[served] += 1
    res.calls = len(msg.get("tool_calls") or [])
    res.success = single_turn_success(msg, meta["ground_truth"], meta.get("tool_names") or {})
    return res


def _run_multi(client: Any, category: str, entry: dict[str, Any], cfg: SimulateConfig) -> EntryResult:
    suites = B.offered_suites(entry, cfg.suites)
    functions: list[dict[str, Any]] = []
    for class_name in suites:
        functions.extend(copy.deepcopy(list(BD._func_doc(class_name))))
    held_out: dict[str, list[dict[str, Any]]] = {}
    for turn, missing in (entry.get("missed_function") or {}).items():
        held_out[str(turn)] = [f for f in functions if f["name"] in missing]
        functions = [f for f in functions if f["name"] not in missing]
    gt = (BD._answers(category).get(entry["id"]) or {}).get("ground_truth") or []
    long_ctx = "long_context" in category
    agent_sims = B.Simulators(suites, entry.get("initial_config") or {}, long_context=long_ctx)
    gt_sims = B.Simulators(suites, entry.get("initial_config") or {}, long_context=long_ctx)
    tools, names = B.to_openai_tools(functions)
    systems, _ = BT._conversation(entry["question"])
    history: list[dict[str, Any]] = [BT._system_message(cfg.system_prompt, systems)]
    res = EntryResult(category, entry["id"], True, 0, 0)
    session = f"bfcl:{category}:{entry['id']}"
    for turn, messages in enumerate(entry["question"]):
        if str(turn) in held_out:
            functions = functions + held_out[str(turn)]
            tools, names = B.to_openai_tools(functions)
            messages = [{"role": "user", "content": B.ADDITIONAL_FUNCTION_PROMPT}]
        back = {tool: orig for orig, tool in names.items()}
        history.extend({"role": m["role"], "content": m.get("content")} for m in messages if m["role"] != "system")
        agent_results: list[str] = []
        for _ in range(cfg.max_steps):
            try:
                msg, served = _chat(client, {"model": cfg.model, "messages": history, "tools": tools}, session)
            except Exception as exc:
                res.errors.append(f"turn {turn}: {type(exc).__name__}: {exc}")
                res.success = False
                return res
            res.llm_calls += 1
            res.served_by[served] += 1
            history.append(msg)
            calls = msg.get("tool_calls") or []
            if not calls:
                break
            for c in calls:
                res.calls += 1
                fn = c["function"]
                try:
                    args = json_loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {}
                result = agent_sims.execute(back.get(fn["name"], fn["name"]), args if isinstance(args, dict) else {})
                agent_results.append(result)
                history.append({"role": "tool", "tool_call_id": c["id"], "content": result})
        gt_results = []
        for call_text in gt[turn] if turn < len(gt) else []:
            fname, a, kw = B.parse_call(call_text)
            gt_results.append(gt_sims.execute(fname, BT._jsonable(gt_sims.bind(fname, a, kw))))
        if _state(agent_sims) != _state(gt_sims):
            res.success = False
        missing = Counter(gt_results) - Counter(agent_results)
        if missing:
            res.success = False
    return res


def run_entry(client: Any, category: str, entry: dict[str, Any], index: int, cfg: SimulateConfig,
              source: str | None = None) -> EntryResult | None:
    """Drive one BFCL entry through ``client``; None for entries that cannot
    be simulated (agentic categories, entries without ground truth)."""
    source = source or category
    if source in B.MULTI_TURN:
        return _run_multi(client, category, entry, cfg)
    if source in B.AGENTIC:
        return None  # needs a live search engine or memory write phase
    try:
        return _run_single(client, category, entry, index, cfg, source)
    except BT._Skip:
        return None


def simulate_bfcl(
    client: Any, cfg: SimulateConfig, *, progress: Callable[[EntryResult], None] | None = None
) -> SimulateReport:
    """Run every selected entry through ``client`` (an ``openai.OpenAI``)."""
    report = SimulateReport()
    t0 = time.perf_counter()
    for category in B.resolve_categories(cfg.categories):
        pairs = B.category_entries(category)[cfg.offset :]
        if cfg.limit is not None:
            pairs = pairs[: cfg.limit]
        for index, (source, entry) in enumerate(pairs, start=cfg.offset):
            r = run_entry(client, category, entry, index, cfg, source)
            if r is None:
                continue
            report.results.append(r)
            if progress is not None:
                progress(r)
    report.seconds = time.perf_counter() - t0
    return report


def entries_count(categories: Iterable[str], limit: int | None, offset: int = 0) -> int:
    n = 0
    for c in B.resolve_categories(categories):
        pairs = B.category_entries(c)[offset:]
        n += len(pairs if limit is None else pairs[:limit])
    return n
