"""PII scrubbing quality and curation throughput.

Quality: protege's scrubber against a naive baseline (one email regex and one
phone regex, what a quick script would do) on the labelled set
bench/data/pii_cases.jsonl (text + expected spans; about half the strings are
negatives: code identifiers, ids, numbers, dates, places in ordinary
requests). Presidio is compared too when it is importable.

Metrics are entity-level: a gold entity counts as found when a predicted span
overlaps it, and a prediction is correct when it overlaps a gold entity (what
matters for redaction is that the value is gone). Strict scores (exact
boundaries and the same kind) and character-level scores are printed beside.

Throughput (``--curate-throughput N``): N synthetic agent traces in a fresh
SQLite store, curated end to end (filters, scrub with NER, dedup, writes),
against a naive curation of a sample that scrubs each trace on its own
(no per-string cache, no batched NER).

    .venv/bin/python bench/pii.py
    .venv/bin/python bench/pii.py --curate-throughput 20000
    .venv/bin/python bench/pii.py --bfcl-mixture 20000   # bench/tasks.py's traffic
    .venv/bin/python bench/pii.py --bfcl-timing 100000 --baseline-n 5000   # vs an earlier revision
    .venv/bin/python bench/pii.py --quality --bfcl-timing 10000 --baseline-n 10000 --baseline-rev 4510969
    .venv/bin/python bench/pii.py --ner-templates 3000   # NER templates vs NER on every segment
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = ROOT / "bench" / "data" / "pii_cases.jsonl"
# Built by bench/pii_heldout.py; its misses were read and worked on since, so
# it is reported as the earlier held-out set, no longer as evidence.
HELDOUT = ROOT / "bench" / "data" / "pii_heldout.jsonl"
# Built by bench/pii_fresh.py from sources no detector uses; never tuned on.
FRESH = ROOT / "bench" / "data" / "pii_fresh.jsonl"

# The kinds a secret can be labelled with are interchangeable for strict matching.
_GROUP = {
    "PASSWORD": "SECRET",
    "API_KEY": "SECRET",
    "JWT": "SECRET",
    "SECRET": "SECRET",
    "SSN": "NATIONAL_ID",
}

Spans = list[tuple[int, int, str]]


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _overlap(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(cases: list[dict[str, Any]], predictions: list[Spans]) -> dict[str, Any]:
    tp_gold = n_gold = tp_pred = n_pred = 0
    strict_tp = 0
    char_tp = char_gold = char_pred = 0
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fp_strings = 0
    misses: list[str] = []
    false_pos: list[str] = []
    for case, pred in zip(cases, predictions, strict=True):
        gold = [(s["start"], s["end"], s["type"]) for s in case["spans"]]
        text = case["text"]
        for g in gold:
            hit = any(_overlap(g, p) for p in pred)
            tp_gold += hit
            n_gold += 1
            per_kind[g[2]][0] += hit
            per_kind[g[2]][1] += 1
            if not hit:
                misses.append(f"{g[2]}: {text[g[0] : g[1]]!r}")
            if any(
                p[0] == g[0] and p[1] == g[1] and _GROUP.get(p[2], p[2]) == _GROUP.get(g[2], g[2])
                for p in pred
            ):
                strict_tp += 1
        for p in pred:
            ok = any(_overlap(p, g) for g in gold)
            tp_pred += ok
            n_pred += 1
            if not ok:
                false_pos.append(f"{p[2]}: {text[p[0] : p[1]]!r}")
        if not gold and pred:
            fp_strings += 1
        gchars = {i for g in gold for i in range(g[0], g[1])}
        pchars = {i for p in pred for i in range(p[0], p[1])}
        char_tp += len(gchars & pchars)
        char_gold += len(gchars)
        char_pred += len(pchars)
    negatives = sum(1 for c in cases if not c["spans"])

    def ratio(a: int, b: int) -> float:
        return a / b if b else 1.0

    return {
        "precision": ratio(tp_pred, n_pred),
        "recall": ratio(tp_gold, n_gold),
        "strict_precision": ratio(strict_tp, n_pred),
        "strict_recall": ratio(strict_tp, n_gold),
        "char_precision": ratio(char_tp, char_pred),
        "char_recall": ratio(char_tp, char_gold),
        "negatives_flagged": f"{fp_strings}/{negatives}",
        "per_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_kind.items())},
        "misses": misses,
        "false_positives": false_pos,
    }


# -- systems ------------------------------------------------------------------
def protege_system(**cfg: Any) -> Callable[[list[str]], list[Spans]]:
    from protege.curate.scrub import Scrubber

    def run(texts: list[str]) -> list[Spans]:
        s = Scrubber(**cfg)
        s.prime(texts)
        return [[(sp.start, sp.end, sp.kind) for sp in s.detect(t)] for t in texts]

    return run


_NAIVE_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_NAIVE_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")


def naive_system(texts: list[str]) -> list[Spans]:
    out = []
    for t in texts:
        spans = [(m.start(), m.end(), "EMAIL") for m in _NAIVE_EMAIL.finditer(t)]
        spans += [(m.start(), m.end(), "PHONE") for m in _NAIVE_PHONE.finditer(t)]
        out.append(spans)
    return out


def presidio_system() -> Callable[[list[str]], list[Spans]] | None:
    try:
        from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]
    except ImportError:
        return None
    engine = AnalyzerEngine()

    def run(texts: list[str]) -> list[Spans]:
        return [[(r.start, r.end, r.entity_type) for r in engine.analyze(t, language="en")] for t in texts]

    return run


def quality(repeats: int) -> None:
    cases = load_cases()
    texts = [c["text"] for c in cases]
    systems: dict[str, Callable[[list[str]], list[Spans]]] = {
        "naive regex (email+phone)": naive_system,
        "protege (patterns only)": protege_system(ner=False),
        "protege": protege_system(),
    }
    pres = presidio_system()
    if pres is not None:
        systems["presidio (defaults)"] = pres
    # Warm the NER model so its load time is not charged to the first run.
    protege_system()(["Warm up with Jane Doe."])
    rows = []
    results = {}
    for name, fn in systems.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            preds = fn(texts)
            times.append(time.perf_counter() - t0)
        res = score(cases, preds)
        results[name] = res
        med = statistics.median(times)
        rows.append((name, res, len(texts) / med))
    held: dict[str, Any] = {}
    n_gold = sum(len(c["spans"]) for c in cases)
    print(
        f"labelled set: {len(cases)} strings, {n_gold} entities, "
        f"{sum(1 for c in cases if not c['spans'])} negative strings (entity-level, overlap matching)"
    )
    head = f"{'system':28} {'prec':>6} {'recall':>6} {'strictP':>7} {'strictR':>7} {'charP':>6} {'charR':>6} {'neg flagged':>11} {'strings/s':>9}"
    print(head)
    print("-" * len(head))
    for name, r, rate in rows:
        print(
            f"{name:28} {r['precision']:6.3f} {r['recall']:6.3f} {r['strict_precision']:7.3f} "
            f"{r['strict_recall']:7.3f} {r['char_precision']:6.3f} {r['char_recall']:6.3f} "
            f"{r['negatives_flagged']:>11} {rate:9.0f}"
        )
    if pres is None:
        print("(presidio not installed: skipped)")
    hold = [i for i, c in enumerate(cases) if c["group"].startswith("holdout")]
    if hold:
        # Written after the detectors were tuned on the rest, and not tuned on since.
        sub = [cases[i] for i in hold]
        print(f"\nheld-out part ({len(sub)} strings, {sum(len(c['spans']) for c in sub)} entities):")
        for name, fn in systems.items():
            r = score(sub, fn([c["text"] for c in sub]))
            print(
                f"{name:28} precision {r['precision']:.3f} recall {r['recall']:.3f} "
                f"negatives flagged {r['negatives_flagged']}"
            )
            if name == "protege":
                held = r
        if held["misses"] or held["false_positives"]:
            print("  held-out misses:", "; ".join(held["misses"]) or "-")
            print("  held-out false positives:", "; ".join(held["false_positives"]) or "-")
    sets = {"developed": cases}
    for label, path in (("earlier held-out", HELDOUT), ("fresh held-out", FRESH)):
        if path.exists():
            sets[label] = load_cases(path)
    heldout_columns(systems, sets)
    best = results["protege"]
    base = results["naive regex (email+phone)"]
    print(
        f"\nrecall protege/naive: {best['recall']:.3f} vs {base['recall']:.3f}; "
        f"precision {best['precision']:.3f} vs {base['precision']:.3f}"
    )
    print("protege per-kind recall:", ", ".join(f"{k} {v}" for k, v in best["per_kind"].items()))
    if best["misses"]:
        print("protege misses:", "; ".join(best["misses"]))
    if best["false_positives"]:
        print("protege false positives:", "; ".join(best["false_positives"]))


def _kind_group(kind: str) -> str:
    return {"PERSON": "names", "PHONE": "phones", "ADDRESS": "addresses", "NATIONAL_ID": "ids",
            "EMAIL": "emails"}.get(kind, "secrets" if _GROUP.get(kind) == "SECRET" else kind.lower())


def _kept(r: dict[str, Any]) -> float:
    flagged, negs = (int(x) for x in r["negatives_flagged"].split("/"))
    return (negs - flagged) / max(1, negs)


def heldout_columns(systems: dict[str, Callable[[list[str]], list[Spans]]],
                    sets: dict[str, list[dict[str, Any]]]) -> None:
    """Each system on the set it was developed on and on the held-out sets,
    side by side (precision, recall, share of must-stay strings kept); then
    the last set's recall per kind of entity and protege's misses there."""
    print()
    for label, cases in sets.items():
        print(f"{label}: {len(cases)} strings, {sum(len(c['spans']) for c in cases)} entities, "
              f"{sum(1 for c in cases if not c['spans'])} must stay")
    head = f"{'system':28} " + " ".join(f"{label[:18]:>20}" for label in sets)
    print(head)
    print(f"{'':28} " + " ".join(f"{'P     R     kept':>20}" for _ in sets))
    print("-" * len(head))
    last = list(sets)[-1]
    for name, fn in systems.items():
        cells, res = [], {}
        for label, cases in sets.items():
            r = score(cases, fn([c["text"] for c in cases]))
            res[label] = r
            cells.append(f"{r['precision']:.3f} {r['recall']:.3f} {_kept(r):.3f}")
        print(f"{name:28} " + " ".join(f"{c:>20}" for c in cells))
        by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for kind, frac in res[last]["per_kind"].items():
            a, b = (int(x) for x in frac.split("/"))
            by[_kind_group(kind)][0] += a
            by[_kind_group(kind)][1] += b
        print(f"{'':28} {last} recall by kind: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(by.items())))
        if name == "protege":
            for label in list(sets)[1:]:
                print(f"  {label} misses:", "; ".join(res[label]["misses"]) or "-")
                print(f"  {label} false positives:", "; ".join(res[label]["false_positives"]) or "-")


# -- throughput ---------------------------------------------------------------
_FIRST = (
    "Olivia Liam Emma Noah Ava Elijah Sophia Lucas Mia Mateo Amara Kenji Priya Omar Ingrid Tomasz Chloe Arjun "
    "Fatima Diego Hana Ibrahim Zoe Nikolai Leila Pablo Greta Jamal Yara Felix Anika Tariq Elena Kofi Saoirse Ravi"
).split()
# Surnames from syllables: hundreds of distinct names, so most support messages
# are unique strings and pay for NER (the cache cannot help).
_LAST_HEAD = "Berg Hol Mar Ok Ands Kow Fern Dub Tan Had Lar Nak Vel Rom Sand Whit Ash Cal Dor Eng".split()
_LAST_TAIL = (
    "son strom ovic ez ani afor alski andez ois aka dad sen amura asquez ero ers ley ford ton".split()
)
_CITIES = "Paris Rome Denver Osaka Lagos Lima Oslo Austin Porto Hanoi Dublin Quito".split()


def _tool(name: str, props: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ').capitalize()} for the caller. " * 3,
            "parameters": {
                "type": "dict",
                "properties": {k: {"type": v, "description": f"The {k}."} for k, v in props.items()},
                "required": required,
            },
        },
    }


def synthetic_traces(n: int, seed: int = 0) -> list[Any]:
    """An agent with four call sites: weather and flight tool calls, support
    e-mail drafting (names, e-mails, phone numbers), and a JSON classifier.
    A few percent errors, truncations and invalid calls; some repeats."""
    from protege.capture import build_trace

    rng = random.Random(seed)
    tools = [
        _tool("get_weather", {"city": "string", "days": "integer"}, ["city"]),
        _tool(
            "search_flights",
            {"origin": "string", "destination": "string", "date": "string"},
            ["origin", "destination"],
        ),
    ]
    sys_tools = "You are a travel assistant for an airline. Use the tools when needed. " * 12
    sys_mail = "You write short, polite customer-support replies. Never promise refunds. " * 10
    sys_cls = "Classify the ticket into billing, technical, account or other. Reply with JSON. " * 8
    out = []
    t0 = time.time() - n
    for i in range(n):
        site = rng.random()
        kw: dict[str, Any] = {"created_at": t0 + i, "session_id": f"s{i // 4}"}
        if site < 0.35:
            city = rng.choice(_CITIES)
            q = f"What's the weather in {city} for the next {rng.randint(1, 7)} days? ref {rng.randint(1000, 99999)}"
            req = {
                "model": "gpt-4o",
                "messages": [{"role": "system", "content": sys_tools}, {"role": "user", "content": q}],
                "tools": tools,
            }
            args = json.dumps({"city": city, "days": rng.randint(1, 7)})
            msg = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": args}}
                ],
            }
            finish = "tool_calls"
        elif site < 0.6:
            a, b = rng.sample(_CITIES, 2)
            q = f"Find flights from {a} to {b} on 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            req = {
                "model": "gpt-4o",
                "messages": [{"role": "system", "content": sys_tools}, {"role": "user", "content": q}],
                "tools": tools,
            }
            args = json.dumps({"origin": a, "destination": b})
            if rng.random() < 0.03:
                args = args[:-3]  # cut-off arguments
            msg = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "search_flights", "arguments": args}}
                ],
            }
            finish = "tool_calls"
        elif site < 0.85:
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST_HEAD)}{rng.choice(_LAST_TAIL)}"
            email = f"{name.split()[0].lower()}.{rng.randint(1, 999)}@example.com"
            q = (
                f"Customer {name} ({email}, +1 415 555 {rng.randint(100, 199):04d}) writes: my order "
                f"{rng.randint(10000, 99999)} arrived damaged, what can I do?"
            )
            req = {
                "model": "gpt-4o",
                "messages": [{"role": "system", "content": sys_mail}, {"role": "user", "content": q}],
            }
            msg = {
                "role": "assistant",
                "content": f"Dear {name.split()[0]}, we are sorry to hear that. We will send a replacement.",
            }
            finish = "length" if rng.random() < 0.03 else "stop"
        else:
            q = rng.choice(
                [
                    "I was charged twice",
                    "The app crashes on login",
                    "How do I change my e-mail?",
                    "Where is my invoice?",
                ]
            )
            q = f"Ticket #{rng.randint(1, 10**6)}: {q}"
            req = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": sys_cls}, {"role": "user", "content": q}],
                "response_format": {"type": "json_object"},
            }
            msg = {
                "role": "assistant",
                "content": json.dumps({"label": rng.choice(["billing", "technical", "account", "other"])}),
            }
            finish = "stop"
        resp = {
            "id": "x",
            "object": "chat.completion",
            "model": req["model"],
            "choices": [{"index": 0, "finish_reason": finish, "message": msg}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 20},
        }
        if rng.random() < 0.02:
            out.append(build_trace(req, None, status="error", error="upstream 502", http_status=502, **kw))
        else:
            out.append(build_trace(req, resp, **kw))
    return out


def throughput(n: int, sample: int) -> None:
    from protege.curate import curate
    from protege.curate.names import load_ner
    from protege.curate.pipeline import CurateConfig
    from protege.curate.scrub import Scrubber
    from protege.database import open_store

    traces = synthetic_traces(n)
    load_ner()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for label, cfg in [
            ("curate (scrub with NER)", CurateConfig()),
            ("curate --no-ner", CurateConfig(ner=False)),
            ("curate --no-scrub", CurateConfig(scrub=False)),
        ]:
            url = f"sqlite:///{tmp}/{label.split()[-1].strip('()-')}.db"
            store = open_store(url)
            for i in range(0, len(traces), 5000):
                store.add_traces(traces[i : i + 5000])
            rep = curate(store, cfg)
            store.close()
            results.append((label, rep))
        # Naive: each trace scrubbed on its own, no cache, NER per string, on a sample.
        naive = Scrubber(cache_size=0)
        part = traces[:sample]
        t0, c0 = time.perf_counter(), time.process_time()
        for t in part:
            naive.scrub_trace(t)
        naive_rate = len(part) / (time.perf_counter() - t0)
        naive_cpu_rate = len(part) / (time.process_time() - c0)
    print(
        f"{n} synthetic traces (4 call sites, ~{sum(1 for t in traces if t.status != 'ok')} errors), SQLite, 1 process"
    )
    print(f"{'run':28} {'wall s':>7} {'cpu s':>6} {'traces/s':>9} {'per cpu s':>9} {'kept':>7}  dropped")
    for label, rep in results:
        print(
            f"{label:28} {rep.elapsed_s:7.1f} {rep.cpu_s:6.1f} {rep.traces_per_s:9.0f} "
            f"{rep.seen / max(rep.cpu_s, 1e-9):9.0f} {rep.kept:7d}  {rep.dropped}"
        )
    print(
        f"{'naive scrub only (sample)':28} {'':7} {'':6} {naive_rate:9.0f} {naive_cpu_rate:9.0f} {'':7}  "
        f"({len(part)} traces, no cache, NER per string)"
    )
    full_cpu_rate = results[0][1].seen / max(results[0][1].cpu_s, 1e-9)
    ratio = full_cpu_rate / naive_cpu_rate if naive_cpu_rate else float("nan")
    print(
        f"\nfull curation with NER is {ratio:.1f}x the naive scrubbing rate alone (per CPU second); "
        f"projected 100k traces: {100_000 / max(results[0][1].traces_per_s, 1e-9):.0f}s with NER, "
        f"{100_000 / max(results[1][1].traces_per_s, 1e-9):.0f}s without"
    )


def _mixture_traces(setting: str, n: int) -> Any:
    """(trace, label) pairs of the task-discovery benchmark's BFCL mixture
    (bench/tasks.py), generated lazily, or None, said aloud, when it cannot
    be built."""
    try:
        from tasks import Mixture  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"BFCL mixture unavailable ({exc})")
        return None
    return Mixture().traces(setting, n=n, seed=1)


def bfcl_mixture(n: int, setting: str) -> None:
    """Curation of the task-discovery benchmark's BFCL mixture (bench/tasks.py):
    real BFCL conversations, per-session system prompts with names, tool lists."""
    pairs = _mixture_traces(setting, n)
    if pairs is None:
        return
    from protege.curate import curate, iter_curated
    from protege.curate.names import load_ner
    from protege.curate.pipeline import CurateConfig
    from protege.database import open_store

    traces = [t for t, _ in pairs]
    load_ner()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/mix.db")
        for i in range(0, len(traces), 2000):
            store.add_traces(traces[i : i + 2000])
        size = sum(len(json.dumps(t.request)) for t in traces[:200]) // 200
        print(f"BFCL mixture ({setting} setting): {n} traces, ~{size // 1000} kB per request")
        for label, cfg in [
            ("curate (scrub with NER)", CurateConfig(full=True)),
            ("curate --no-ner", CurateConfig(full=True, ner=False)),
            ("curate --no-scrub", CurateConfig(full=True, scrub=False)),
        ]:
            rep = curate(store, cfg)
            print(
                f"{label:28} wall {rep.elapsed_s:6.1f}s  cpu {rep.cpu_s:6.1f}s  {rep.seen / max(rep.cpu_s, 1e-9):6.0f} "
                f"traces per cpu s  kept {rep.kept}  {rep.dropped}"
            )
        t0, c0 = time.perf_counter(), time.process_time()
        kept = sum(1 for _ in iter_curated(store))
        print(
            f"iter_curated: {kept} traces, wall {time.perf_counter() - t0:.1f}s, cpu {time.process_time() - c0:.1f}s"
        )
        store.close()


_TIMED_RUN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from protege.curate import curate
from protege.curate.pipeline import CurateConfig
from protege.curate.names import load_ner
from protege.database import open_store
load_ner()
store = open_store(sys.argv[2])
extra = {"workers": int(sys.argv[3])} if len(sys.argv) > 3 else {}
rep = curate(store, CurateConfig(full=True, **extra))
print(json.dumps({"wall": rep.elapsed_s, "cpu": rep.cpu_s, "seen": rep.seen, "kept": rep.kept}))
"""


def _timed_curate(code_root: Path, url: str, workers: int | None = None) -> dict[str, Any]:
    """One full curation run in a fresh process with ``code_root``'s protege."""
    import subprocess

    cmd = [sys.executable, "-c", _TIMED_RUN, str(code_root), url]
    if workers is not None:
        cmd.append(str(workers))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bfcl_timing(n: int, baseline_n: int, baseline_rev: str, setting: str) -> None:
    """Curation wall and CPU time on the BFCL mixture, this tree against the
    code of ``baseline_rev`` (exported with ``git archive``) on the same store;
    the baseline runs on the first ``baseline_n`` traces (it is slow) and is
    projected to ``n`` linearly, this tree runs on both."""
    import subprocess

    mixture = _mixture_traces(setting, n)
    if mixture is None:
        return
    from protege.database import open_store

    baseline_n = min(baseline_n, n)
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp) / "baseline"
        old_root.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", baseline_rev, "protege"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive, check=True)
        t0 = time.perf_counter()
        urls = {}
        pairs = mixture
        small = open_store(urls.setdefault("small", f"sqlite:///{tmp}/small.db"))
        big = open_store(urls.setdefault("big", f"sqlite:///{tmp}/big.db"))
        batch: list[Any] = []
        done = 0
        for t, _ in pairs:
            batch.append(t)
            if len(batch) == 2000:
                if done < baseline_n:
                    small.add_traces(batch[: baseline_n - done])
                big.add_traces(batch)
                done += len(batch)
                batch = []
        if batch:
            if done < baseline_n:
                small.add_traces(batch[: baseline_n - done])
            big.add_traces(batch)
        small.close()
        big.close()
        print(f"BFCL mixture ({setting}): stores of {baseline_n} and {n} traces built in {time.perf_counter() - t0:.0f}s")
        rows = [
            (f"baseline {baseline_rev[:10]}", baseline_n, _timed_curate(old_root, urls["small"])),
            ("this tree", baseline_n, _timed_curate(ROOT, urls["small"])),
            ("this tree, 1 process", n, _timed_curate(ROOT, urls["big"], workers=1)),
            ("this tree", n, _timed_curate(ROOT, urls["big"])),
        ]
    print(f"{'code':24} {'traces':>7} {'wall s':>7} {'cpu s':>7} {'per cpu s':>9} {'kept':>7}")
    for label, count, r in rows:
        print(f"{label:24} {count:7d} {r['wall']:7.1f} {r['cpu']:7.1f} {r['seen'] / max(r['cpu'], 1e-9):9.0f} {r['kept']:7d}")
    old_rate = rows[0][2]["seen"] / max(rows[0][2]["cpu"], 1e-9)
    new_rate = rows[1][2]["seen"] / max(rows[1][2]["cpu"], 1e-9)
    print(
        f"\nper CPU second on {baseline_n} traces: {new_rate / old_rate:.1f}x the baseline; "
        f"{n} traces: {rows[3][2]['wall']:.1f}s wall, {rows[3][2]['cpu']:.1f}s CPU "
        f"(1 process: {rows[2][2]['wall']:.1f}s wall) "
        f"(baseline projected: {n / old_rate:.0f}s CPU)"
    )


def ner_templates(n: int, setting: str) -> None:
    """Scrubbed BFCL-mixture requests with NER templates against NER on every
    distinct segment (the naive way): NER work, and records where either
    one redacted more names."""
    pairs = _mixture_traces(setting, n)
    if pairs is None:
        return
    from protege.curate.names import load_ner
    from protege.curate.scrub import Scrubber

    traces = [t for t, _ in pairs]
    load_ner()
    out: dict[int, list[str]] = {}
    print(f"NER templates on {n} BFCL-mixture requests ({setting} setting)")
    for confirmations in (0, 3):
        s = Scrubber(template_confirmations=confirmations)
        t0 = time.process_time()
        strings: list[str] = []
        for t in traces:
            strings.extend(s.record_strings(t.request, t.response))
        s.prime(strings)
        out[confirmations] = [json.dumps(s.scrub_request(t.request)["messages"]) for t in traces]
        label = "NER on every segment" if confirmations == 0 else "templates (3 confirmations)"
        print(
            f"{label:30} cpu {time.process_time() - t0:6.1f}s  NER runs {s.stats['ner_runs']:6d}  "
            f"template answers {s.stats['template_hits']:6d}"
        )
    full, templ = out[0], out[3]
    more_full = sum(a.count("<PERSON_") > b.count("<PERSON_") for a, b in zip(full, templ, strict=True))
    more_templ = sum(a.count("<PERSON_") < b.count("<PERSON_") for a, b in zip(full, templ, strict=True))
    same = sum(a == b for a, b in zip(full, templ, strict=True))
    print(
        f"identical scrubbed requests {same}/{n}; more names redacted by every-segment NER in {more_full}, "
        f"by templates in {more_templ}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per system (median reported)")
    ap.add_argument(
        "--curate-throughput",
        type=int,
        default=0,
        metavar="N",
        help="also time curation of N synthetic traces",
    )
    ap.add_argument("--naive-sample", type=int, default=1000, help="traces scrubbed by the naive baseline")
    ap.add_argument(
        "--bfcl-mixture",
        type=int,
        default=0,
        metavar="N",
        help="also time curation of N traces of bench/tasks.py's BFCL mixture",
    )
    ap.add_argument("--setting", default="generic", help="BFCL mixture setting: generic or site")
    ap.add_argument(
        "--bfcl-timing",
        type=int,
        default=0,
        metavar="N",
        help="only time curation of N BFCL-mixture traces against --baseline-rev (no quality run)",
    )
    ap.add_argument("--quality", action="store_true", help="with --bfcl-timing: the quality tables first, same run")
    ap.add_argument("--baseline-n", type=int, default=10000, help="traces the baseline curates in --bfcl-timing")
    ap.add_argument("--baseline-rev", default="479db5d", help="git revision whose curation is the baseline")
    ap.add_argument(
        "--ner-templates", type=int, default=0, metavar="N", help="only compare NER templates on N BFCL traces"
    )
    args = ap.parse_args()
    if args.ner_templates:
        ner_templates(args.ner_templates, args.setting)
        return
    if args.bfcl_timing:
        if args.quality:
            quality(args.repeats)
            print()
        bfcl_timing(args.bfcl_timing, args.baseline_n, args.baseline_rev, args.setting)
        return
    quality(args.repeats)
    if args.curate_throughput:
        print()
        throughput(args.curate_throughput, args.naive_sample)
    if args.bfcl_mixture:
        print()
        bfcl_mixture(args.bfcl_mixture, args.setting)


if __name__ == "__main__":
    main()
