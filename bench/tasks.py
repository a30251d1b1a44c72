"""Task discovery benchmark: recover BFCL-derived call sites from mixed traffic.

    .venv/bin/python bench/tasks.py            # ARI, both settings, + 100k timing
    .venv/bin/python bench/tasks.py --quick    # ARI only

A mixture of call sites built from the Berkeley Function Calling Leaderboard
data shipped in ``bfcl_eval``: seven multi-turn agents (file system, trading,
travel, vehicle, messaging, social posting, support tickets; one trace per LLM
call of the agent loop, final text answers included) and two single-turn API
sites (python science/maths functions, java/javascript library calls) whose
requests each offer their own functions. Two settings:

  (a) each site has its own system prompt (with per-user variable spans) and tools;
  (b) one generic system prompt offers every site's tools.

Discovery is compared with the naive baseline "MiniLM on the instruction +
KMeans with k from silhouette", measured in the same run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path, and its sibling
# benchmarks (bench/datasets.py, ...) would shadow real packages.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from protege.capture.extract import build_trace  # noqa: E402
from protege.store.records import Trace  # noqa: E402

MULTI_SITES = {
    "files": ("gorilla_file_system", "the file-management assistant: you work in the user's workspace"),
    "trading": ("trading_bot", "the brokerage assistant: you manage the user's stock trading account"),
    "travel": ("travel_booking", "the travel desk: you book flights and manage the user's trips"),
    "vehicle": ("vehicle_control", "the in-car assistant: you control the user's vehicle"),
    "messaging": ("message_api", "the workplace messenger: you send and read messages for the user"),
    "social": ("posting_api", "the social media manager: you post and manage the user's posts"),
    "tickets": ("ticket_api", "the support desk: you open and manage support tickets"),
}
SINGLE_SITES = {
    "python_api": (("simple_python",), "the science and maths helper: you call the right library function"),
    "code_api": (("simple_java", "simple_javascript"), "the code assistant: you call the right API for the user's program"),
}
# The held-out mixture: BFCL data never used while discovery was developed, a
# multi-turn category of its own (long context), the MathAPI suite, and
# single-turn categories with real users' functions and parallel calls.
HELDOUT_MULTI = {
    **{k: v for k, v in MULTI_SITES.items() if k in ("files", "trading", "travel", "vehicle")},
    "math": ("math_api", "the calculator: you work out the user's sums with the maths tools"),
}
HELDOUT_SINGLE = {
    "live_api": (("live_simple", "live_multiple"), "the integrations assistant: you call the user's own APIs"),
    "parallel_api": (("parallel", "parallel_multiple"), "the batch helper: you make every call the user asks for"),
}
HELDOUT_MULTI_CATEGORY = "multi_turn_long_context"
FIRST = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Giulia", "Hiro", "Ines", "Jonas", "Kemal", "Lena"]
LAST = ["Smith", "Okafor", "Rossi", "Tanaka", "Novak", "Silva", "Meyer", "Haddad", "Kowalski", "Park"]
COMPANY = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"]
JSON_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}


def _data_dir() -> Path:
    import bfcl_eval

    return Path(bfcl_eval.__file__).parent / "data"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _schema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _schema(v) for k, v in node.items() if k not in ("optional",)}
        if isinstance(out.get("type"), str):
            t = out["type"]
            out["type"] = JSON_TYPES.get(t, t) if t in JSON_TYPES else t
            if t not in ("string", "integer", "number", "boolean", "array", "object", "null") and t not in JSON_TYPES:
                out["type"] = "string"
        return out
    if isinstance(node, list):
        return [_schema(v) for v in node]
    return node


def _tool(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": doc["name"],
            "description": doc.get("description", ""),
            "parameters": _schema(doc.get("parameters") or {"type": "object", "properties": {}}),
        },
    }


def _parse_call(text: str, docs: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    call = ast.parse(text.strip(), mode="eval").body
    assert isinstance(call, ast.Call)
    name = ast.unparse(call.func)
    args: dict[str, Any] = {}
    params = list(((docs.get(name) or {}).get("parameters") or {}).get("properties") or {})
    for i, a in enumerate(call.args):
        key = params[i] if i < len(params) else f"arg{i}"
        args[key] = ast.literal_eval(a)
    for kw in call.keywords:
        args[kw.arg or "kwargs"] = ast.literal_eval(kw.value)
    return name, args


def _completion(model: str, content: str | None, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
             "function": {"name": n, "arguments": json.dumps(a)}}
            for n, a in calls
        ]
    prompt_tokens = 0  # set by the caller
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": 0},
    }


class Mixture:
    """Exchanges (request messages, tools, answer) per site, settings applied later."""

    def __init__(self, multi: dict[str, tuple[str, str]] | None = None,
                 single: dict[str, tuple[tuple[str, ...], str]] | None = None,
                 multi_category: str = "multi_turn_base") -> None:
        d = _data_dir()
        self.multi = MULTI_SITES if multi is None else multi
        self.single = SINGLE_SITES if single is None else single
        self.class_docs: dict[str, list[dict[str, Any]]] = {}
        for site, (cls, _) in self.multi.items():
            self.class_docs[site] = _lines(d / "multi_turn_func_doc" / f"{cls}.json")
        owner = {doc["name"]: site for site, docs in self.class_docs.items() for doc in docs}
        all_docs = {doc["name"]: doc for docs in self.class_docs.values() for doc in docs}
        # (site, session, messages-so-far, calls, text) per LLM call
        self.calls: list[dict[str, Any]] = []
        qs = _lines(d / f"BFCL_v4_{multi_category}.json")
        answers = {a["id"]: a["ground_truth"] for a in _lines(d / "possible_answer" / f"BFCL_v4_{multi_category}.json")}
        for q in qs:
            history: dict[str, list[dict[str, Any]]] = {}
            for turn, gt in zip(q["question"], answers[q["id"]], strict=False):
                if not turn or not gt:
                    continue
                parsed = [_parse_call(c, all_docs) for c in gt]
                sites = {owner.get(n) for n, _ in parsed}
                if len(sites) != 1 or None in sites:
                    continue
                site = sites.pop()
                msgs = history.setdefault(site, [])
                msgs.extend(turn)
                for name, args in parsed:
                    self.calls.append({"site": site, "session": f"{q['id']}:{site}", "messages": list(msgs),
                                       "calls": [(name, args)], "text": None, "tools": None})
                    cid = f"call_{uuid.uuid4().hex[:10]}"
                    msgs.append({"role": "assistant", "content": None, "tool_calls": [
                        {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})
                    msgs.append({"role": "tool", "tool_call_id": cid, "content": json.dumps({"status": "ok"})})
                done = ", ".join(dict.fromkeys(n.replace("_", " ") for n, _ in parsed))
                self.calls.append({"site": site, "session": f"{q['id']}:{site}", "messages": list(msgs),
                                   "calls": [], "text": f"Done: {done}.", "tools": None})
                msgs.append({"role": "assistant", "content": f"Done: {done}."})
        for site, (cats, _) in self.single.items():
            for cat in cats:
                gts = {a["id"]: a["ground_truth"] for a in _lines(d / "possible_answer" / f"BFCL_v4_{cat}.json")}
                for q in _lines(d / f"BFCL_v4_{cat}.json"):
                    calls = []
                    for entry in gts[q["id"]]:
                        for name, params in entry.items():
                            args = {k: v[0] for k, v in params.items() if v and v[0] not in ("", None)}
                            calls.append((name, args))
                    self.calls.append({"site": site, "session": q["id"], "messages": list(q["question"][0]),
                                       "calls": calls, "text": None, "tools": [_tool(f) for f in q["function"]]})
        self.sites = list(self.multi) + list(self.single)
        self.all_multi_tools = [_tool(doc) for docs in self.class_docs.values() for doc in docs]

    def system_prompt(self, site: str, setting: str, rng: random.Random) -> str:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        company = rng.choice(COMPANY)
        day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if setting == "generic":
            return (f"You are Nova, the assistant of {company}. The current user is {name} "
                    f"(account {uuid.UUID(int=rng.getrandbits(128))}). Today is {day}. "
                    "Use the tools when they help and answer briefly.")
        role = (self.multi.get(site) or self.single[site])[1]
        return (f"You are {role}. You work for {company} and assist {name} "
                f"(account {uuid.UUID(int=rng.getrandbits(128))}). Today is {day}. Be precise.")

    def traces(self, setting: str, *, n: int | None = None, seed: int = 0) -> Iterator[tuple[Trace, str]]:
        """(trace, true site) for every call once, or ``n`` calls drawn with replacement."""
        rng = random.Random(seed)
        picks: Any = self.calls if n is None else (rng.choice(self.calls) for _ in range(n))
        prompts: dict[str, str] = {}
        for c in picks:
            site = c["site"]
            key = f"{c['session']}:{rng.randint(0, 3) if n else 0}"
            if key not in prompts:
                prompts[key] = self.system_prompt(site, setting, rng)
            if setting == "generic":
                tools = self.all_multi_tools + (c["tools"] or [])
            else:
                tools = c["tools"] or [_tool(doc) for doc in self.class_docs[site]]
            request = {"model": "gpt-4o", "messages": [{"role": "system", "content": prompts[key]}, *c["messages"]],
                       "tools": tools}
            response = _completion("gpt-4o", c["text"], c["calls"])
            p = sum(len(json.dumps(m)) for m in request["messages"]) // 4 + 20 * len(tools)
            comp = max(1, len(json.dumps(response["choices"][0]["message"])) // 4)
            response["usage"] = {"prompt_tokens": p, "completion_tokens": comp, "total_tokens": p + comp}
            yield build_trace(request, response, source="import", session_id=key,
                              created_at=time.time(), meta={"bench_site": site}), site


def baseline_labels(instructions: list[str], embedder: Any, max_k: int = 15) -> list[int]:
    """Naive baseline: MiniLM on the instruction, KMeans with k by silhouette."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    distinct = list(dict.fromkeys(instructions))
    x = embedder.encode(distinct)
    best: tuple[float, Any] | None = None
    for k in range(2, max_k + 1):
        labels = KMeans(k, n_init=3, random_state=0).fit_predict(x)
        score = silhouette_score(x, labels, sample_size=min(3000, len(distinct)), random_state=0)
        if best is None or score > best[0]:
            best = (score, labels)
    assert best is not None
    pos = {t: i for i, t in enumerate(distinct)}
    return [int(best[1][pos[t]]) for t in np.asarray(instructions, dtype=object)]


def ours(pairs: list[tuple[Trace, str]], embedder: Any) -> tuple[list[str], int, float]:
    from protege.tasks.discover import DiscoverConfig, build_tasks
    from protege.tasks.features import extract

    t0 = time.perf_counter()
    docs: dict[str, str] = {}
    feats = [extract(t, docs) for t, _ in pairs]
    tasks, labels, _ = build_tasks(feats, docs, embedder, DiscoverConfig())
    seconds = time.perf_counter() - t0
    return [tasks[lab].id if lab >= 0 else "unassigned" for lab in labels], len(tasks), seconds


def fingerprint_timing() -> None:
    """p50 of ``fingerprint`` on a typical request: memoised template vs
    masking the system prompt on every call (the naive way)."""
    from protege.tasks.fingerprint import _template_hash, fingerprint, template_of

    rng = random.Random(0)
    mix_tools = [_tool({"name": f"tool_{i}", "description": "d", "parameters": {"type": "dict", "properties": {}}})
                 for i in range(12)]
    system = ("You are the brokerage assistant of Acme for Alice Smith (account "
              f"{uuid.UUID(int=rng.getrandbits(128))}). Today is 2025-03-04. " * 3)
    req = {"model": "gpt-4o", "messages": [{"role": "system", "content": system},
                                           {"role": "user", "content": "Buy 10 shares of NVDA"}], "tools": mix_tools}

    def p50(fn: Any) -> float:
        samples = []
        for _ in range(3000):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return statistics.median(samples) * 1e6

    fingerprint(req)
    cached = p50(lambda: fingerprint(req))

    def uncached() -> str:
        template_of.cache_clear()
        _template_hash.cache_clear()
        return fingerprint(req)

    naive = p50(uncached)
    print(f"fingerprint p50: {cached:.1f} us cached vs {naive:.1f} us masking every call "
          f"({naive / cached:.1f}x); target <= 50 us")


def held_out(pairs: list[tuple[Trace, str]]) -> None:
    """Discover on 80% of the calls, then assign the other 20% with TaskIndex
    (no re-clustering): by request only, and with the answer's tool calls."""
    from sklearn.metrics import adjusted_rand_score

    from protege.tasks.discover import DiscoverConfig, build_tasks
    from protege.tasks.embed import Embedder
    from protege.tasks.features import extract
    from protege.tasks.index import TaskIndex

    rng = random.Random(2)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    cut = int(0.8 * len(order))
    train, test = [pairs[i] for i in order[:cut]], [pairs[i] for i in order[cut:]]
    docs: dict[str, str] = {}
    emb = Embedder()
    tasks, _, _ = build_tasks([extract(t, docs) for t, _ in train], docs, emb, DiscoverConfig())
    index = TaskIndex(tasks, embedder=emb)
    truth = [site for _, site in test]
    t0 = time.perf_counter()
    req_only = [index.assign(t.request)[0] or "unassigned" for t, _ in test]
    t1 = time.perf_counter()
    with_resp = [index.assign(t.request, response=t.response)[0] or "unassigned" for t, _ in test]
    print(f"  held-out 20% assigned by TaskIndex: ARI {adjusted_rand_score(truth, req_only):.3f} from the "
          f"request ({1000 * (t1 - t0) / len(test):.1f} ms/call), "
          f"{adjusted_rand_score(truth, with_resp):.3f} with the answer's tool calls")


def _split_sites(truth: list[str], pred: list[str]) -> None:
    """Which true call sites discovery spread over several tasks (over-splits)
    and which tasks hold several sites (merges)."""
    from collections import Counter, defaultdict

    by_site: dict[str, Counter[str]] = defaultdict(Counter)
    by_task: dict[str, Counter[str]] = defaultdict(Counter)
    for t, p in zip(truth, pred, strict=True):
        by_site[t][p] += 1
        by_task[p][t] += 1
    split = {s: c for s, c in by_site.items() if sum(n >= 0.05 * sum(c.values()) for n in c.values()) > 1}
    merged = {p: c for p, c in by_task.items() if sum(n >= 0.05 * sum(c.values()) for n in c.values()) > 1}
    if split:
        print("  split: " + "; ".join(f"{s} over {len(c)} tasks {sorted(c.values(), reverse=True)[:4]}"
                                      for s, c in split.items()))
    if merged:
        print("  merged: " + "; ".join(f"{' + '.join(sorted(c))}" for c in merged.values()))


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from protege.tasks.embed import Embedder
    from protege.tasks.features import last_user_message

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ARI only, skip the 100k timing")
    ap.add_argument("--n", type=int, default=100_000, help="traces for the timing run")
    args = ap.parse_args()
    fingerprint_timing()
    Embedder().encode(["load the model once, outside the timings"])
    mixtures = [("developed on", Mixture()),
                ("held out", Mixture(HELDOUT_MULTI, HELDOUT_SINGLE, HELDOUT_MULTI_CATEGORY))]
    for side, mix in mixtures:
        print(f"\n{side}: {len(mix.calls)} calls from {len(mix.sites)} call sites: {', '.join(mix.sites)}")
        print(f"{'setting':<10} {'baseline ARI':>12} {'k':>3} {'s':>6}   {'protege ARI':>11} {'k':>3} {'s':>6}")
        for setting in ("site", "generic"):
            pairs = list(mix.traces(setting))
            truth = [site for _, site in pairs]
            base_emb = Embedder()
            t0 = time.perf_counter()
            base = baseline_labels([last_user_message(t.request) for t, _ in pairs], base_emb)
            base_s = time.perf_counter() - t0
            pred, k, our_s = ours(pairs, Embedder())
            print(f"{setting:<10} {adjusted_rand_score(truth, base):>12.3f} {len(set(base)):>3} {base_s:>6.1f}   "
                  f"{adjusted_rand_score(truth, pred):>11.3f} {k:>3} {our_s:>6.1f}")
            _split_sites(truth, pred)
            held_out(pairs)
    if args.quick:
        return
    from protege.tasks.discover import DiscoverConfig, build_tasks
    from protege.tasks.features import extract

    print(f"\ntiming: {args.n} traces (generic setting, drawn with replacement; curation not included)")
    pairs = list(mix.traces("generic", n=args.n, seed=1))
    t0 = time.perf_counter()
    docs: dict[str, str] = {}
    feats = [extract(t, docs) for t, _ in pairs]
    t1 = time.perf_counter()
    tasks, labels, embedded = build_tasks(feats, docs, Embedder(), DiscoverConfig())
    t2 = time.perf_counter()
    truth = [site for _, site in pairs]
    ari = adjusted_rand_score(truth, [str(lab) for lab in labels])
    # Baseline cost at this size: every distinct instruction through MiniLM.
    distinct = len({f.instruction for f in feats})
    print(f"features {t1 - t0:.1f}s, clustering {t2 - t1:.1f}s ({embedded} texts embedded), "
          f"total {t2 - t0:.1f}s, {len(tasks)} tasks, ARI {ari:.3f}; "
          f"the baseline would embed {distinct} distinct instructions")


if __name__ == "__main__":
    main()
