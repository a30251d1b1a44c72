from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from protege.capture import build_trace
from protege.cli.main import cli
from protege.curate import curate, iter_curated
from protege.curate.dedup import NearDupIndex, dedup_text, exact_hash, jaccard, shingles
from protege.curate.filters import FilterConfig, SchemaCache, check_trace, normalize_schema
from protege.curate.pipeline import CurateConfig
from protege.curate.view import curated_counts
from protege.database import open_store
from protege.store import Feedback

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "dict",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "scale": {"type": "float"},
            },
            "required": ["city"],
        },
    },
}


def req(text: str, *, tools: bool = True, system: str = "You are a helpful assistant.", **extra) -> dict:
    r = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        **extra,
    }
    if tools:
        r["tools"] = [WEATHER_TOOL]
    return r


def resp(*, args: str | None = '{"city": "Paris"}', name: str = "get_weather", content=None, finish="tool_calls"):
    msg: dict = {"role": "assistant", "content": content}
    if args is not None:
        msg["tool_calls"] = [{"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}]
    return {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": finish, "message": msg}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }


def _check(trace, **cfg) -> str | None:
    return check_trace(trace, FilterConfig(**cfg), SchemaCache())


# -- filters ----------------------------------------------------------------
def test_filters_drop_each_kind_of_bad_trace():
    ok = build_trace(req("weather in Paris?"), resp())
    assert _check(ok) is None
    assert _check(build_trace(req("x"), None, status="error", error="boom", http_status=500)) == "error"
    assert _check(build_trace(req("x"), resp(args=None, content="The weath", finish="length"))) == "truncated"
    assert _check(build_trace(req("x"), resp(args=None, content="  ", finish="stop"))) == "empty"
    assert _check(build_trace(req("x"), resp(name="delete_everything"))) == "unknown_tool"
    assert _check(build_trace(req("x", tools=False), resp())) == "unknown_tool"
    assert _check(build_trace(req("x"), resp(args='{"city": "Par'))) == "invalid_arguments"
    assert _check(build_trace(req("x"), resp(args='["Paris"]'))) == "invalid_arguments"
    # Missing required argument, wrong type: both break the schema.
    assert _check(build_trace(req("x"), resp(args='{"days": 3}'))) == "schema_violation"
    assert _check(build_trace(req("x"), resp(args='{"city": "Paris", "days": "three"}'))) == "schema_violation"
    assert _check(build_trace(req("x"), resp(args='{"days": 3}')), check_schema=False) is None
    # A text answer without tools is fine; JSON mode needs JSON.
    assert _check(build_trace(req("hi", tools=False), resp(args=None, content="Hello!", finish="stop"))) is None
    jreq = req("hi", tools=False, response_format={"type": "json_object"})
    assert _check(build_trace(jreq, resp(args=None, content="not json", finish="stop"))) == "invalid_json_output"
    assert _check(build_trace(jreq, resp(args=None, content='{"a": 1}', finish="stop"))) is None


def test_bfcl_schema_types_are_mapped_leniently():
    # float accepts an integer (JSON has one number type); "any" and "tuple" constrain loosely.
    schema = {
        "type": "dict",
        "properties": {
            "x": {"type": "float"},
            "pair": {"type": "tuple", "items": {"type": "integer"}},
            "anything": {"type": "any"},
            "opts": {"type": "dict", "properties": {"deep": {"type": "boolean"}}},
        },
        "required": ["x"],
    }
    norm = normalize_schema(schema)
    assert norm["type"] == "object"
    assert norm["properties"]["pair"]["type"] == "array"
    assert "type" not in norm["properties"]["anything"]
    v = SchemaCache().validator(schema)
    assert v.is_valid({"x": 3, "pair": [1, 2], "anything": [{"a": None}], "opts": {"deep": True}})
    assert not v.is_valid({"x": "3"})
    assert not v.is_valid({"x": 1.5, "opts": {"deep": "yes"}})
    # A schema that is not valid JSON Schema constrains nothing rather than failing the trace.
    broken = SchemaCache().validator({"type": "object", "properties": {"a": {"minimum": "zero"}}})
    assert broken.is_valid({"a": 3}) and broken.is_valid({"a": "x"})
    # Rejected only by a keyword that is itself invalid (a negative length): kept too.
    odd = SchemaCache().validator({"type": "object", "properties": {"a": {"type": "string", "maxLength": -1}}})
    assert odd.is_valid({"a": "abc"})
    unknown = SchemaCache().validator({"type": "object", "properties": {"a": {"type": ["string", "mystery"]}}})
    assert unknown.is_valid({"a": 1})


def test_feedback_filter_uses_trace_then_session_feedback():
    t = build_trace(req("x"), resp(), session_id="s1")
    assert _check(t, feedback_min=0.5) == "feedback"  # no feedback at all
    assert check_trace(t, FilterConfig(feedback_min=0.5), SchemaCache(), (0.9, None)) is None
    assert check_trace(t, FilterConfig(feedback_min=0.5), SchemaCache(), (0.2, None)) == "feedback"
    assert check_trace(t, FilterConfig(feedback_labels=("good",)), SchemaCache(), (None, "good")) is None
    assert check_trace(t, FilterConfig(feedback_labels=("good",)), SchemaCache(), (None, "bad")) == "feedback"


# -- dedup ------------------------------------------------------------------
def test_exact_hash_covers_input_side_only():
    a = req("weather in Paris?")
    b = dict(a, model="another-model", temperature=0.3)
    assert exact_hash(a) == exact_hash(b)
    assert exact_hash(a) != exact_hash(req("weather in Rome?"))
    assert exact_hash(a) != exact_hash(req("weather in Paris?", tools=False))


def test_near_dup_groups_near_copies_and_verifies_true_similarity():
    long_q = (
        "Please summarise the quarterly report for the northern sales region, list the three largest "
        "accounts by revenue and flag any invoice that is more than sixty days overdue."
    )
    near = long_q.replace("sixty", "ninety")
    other = "Book a table for two at an Italian restaurant near the station tomorrow at seven."
    idx = NearDupIndex(threshold=0.8)
    g1, _ = idx.assign("t1", dedup_text(req(long_q)))
    g2, _ = idx.assign("t2", dedup_text(req(near, system="A different system prompt entirely.")))
    g3, _ = idx.assign("t3", dedup_text(req(other)))
    assert g1 == "t1" and g2 == "t1" and g3 == "t3"
    assert jaccard(shingles(dedup_text(req(long_q))), shingles(dedup_text(req(near)))) >= 0.8
    # The system prompt is shared by every call of a call site: it must not make calls look alike.
    idx2 = NearDupIndex(threshold=0.9)
    big_system = "You are the ops assistant. " * 50
    ga, _ = idx2.assign("a", dedup_text(req("weather in Paris today?", system=big_system)))
    gb, _ = idx2.assign("b", dedup_text(req("convert 10 dollars to euros", system=big_system)))
    assert ga != gb
    # LSH candidates below the target are rejected by the exact Jaccard check.
    # (true Jaccard 0.79 while the MinHash estimate says 0.83: the estimate alone would be wrong)
    idx3 = NearDupIndex(threshold=0.82, candidate_threshold=0.3)
    idx3.assign("p", dedup_text(req(long_q)))
    g, _ = idx3.assign("q", dedup_text(req(long_q.replace("quarterly", "annual").replace("three", "five"))))
    assert g == "q"
    assert idx3.candidates_checked == 1 and idx3.candidates_accepted == 0


def test_minhash_signatures_match_datasketch():
    from datasketch import MinHash

    idx = NearDupIndex()
    sh = shingles("the quick brown fox jumps over the lazy dog, twice")
    m = MinHash(num_perm=64, seed=1, hashfunc=int)
    m.update_batch(sh.tolist())
    assert (m.hashvalues.astype("uint32") == idx.hashvalues(sh)).all()


def test_near_dup_bridge_merges_groups():
    idx = NearDupIndex(threshold=0.4, candidate_threshold=0.2)
    a = "alpha beta gamma delta epsilon zeta eta theta"
    b = "kappa lambda mu nu xi omicron pi rho sigma"
    assert idx.assign("A", a)[0] == "A"
    assert idx.assign("B", b)[0] == "B"
    # Close enough to both: joins them, and the absorbed group is reported for relabelling.
    assert idx.assign("C", a + " " + b)[0] == "A"
    assert idx.merged() == {"B": "A"}
    assert idx.find("B") == "A"


# -- the run -----------------------------------------------------------------
def _seed(store):
    traces = [
        build_trace(req("Email jane.doe@example.com the forecast for Paris"), resp(), session_id="s1"),
        build_trace(req("weather in Rome?"), resp(args='{"city": "Rome"}'), session_id="s2"),
        build_trace(req("weather in Rome?"), resp(args='{"city": "Rome"}'), session_id="s3"),  # exact dup
        build_trace(req("x"), None, status="error", error="upstream 500"),
        build_trace(req("x"), resp(name="nope")),
        build_trace(req("x"), resp(args='{"city": 5}')),
    ]
    store.add_traces(traces)
    return traces


def test_curate_dry_run_then_real_then_incremental(store):
    traces = _seed(store)
    raw_before = {t.id: store.get_trace(t.id).request for t in traces}

    dry = curate(store, CurateConfig(dry_run=True, ner=False))
    assert dry.seen == 6 and dry.kept == 2
    assert dry.dropped == {"error": 1, "unknown_tool": 1, "schema_violation": 1, "exact_duplicate": 1}
    assert curated_counts(store) == {}
    assert list(iter_curated(store)) == []

    real = curate(store, CurateConfig(ner=False))
    assert (real.seen, real.kept, real.dropped) == (dry.seen, dry.kept, dry.dropped)
    assert real.scrubbed == {"EMAIL": 1}
    kept = list(iter_curated(store))
    assert [t.id for t in kept] == [traces[0].id, traces[1].id]
    assert "<EMAIL_1>" in kept[0].request["messages"][1]["content"]
    assert kept[0].meta["curate"]["near_dup_group"] == traces[0].id
    assert kept[0].meta["curate"]["exact_hash"] == exact_hash(kept[0].request)
    assert kept[0].session_id == "s1" and kept[0].tools_called == ["get_weather"]
    # Raw traces are never modified.
    assert {t.id: store.get_trace(t.id).request for t in traces} == raw_before

    # Incremental: only new traces are curated; a copy of an already kept one is an exact duplicate.
    again = curate(store, CurateConfig(ner=False))
    assert again.seen == 0
    new = [
        build_trace(req("weather in Rome?"), resp(args='{"city": "Rome"}')),
        build_trace(req("weather in Rome??"), resp(args='{"city": "Rome"}')),
        build_trace(req("book me a train to Lyon for Friday"), resp(args=None, content="Done.", finish="stop")),
    ]
    store.add_traces(new)
    inc = curate(store, CurateConfig(ner=False, near_dup_threshold=0.7))
    assert inc.seen == 3 and inc.kept == 2 and inc.dropped == {"exact_duplicate": 1}
    by_id = {t.id: t for t in iter_curated(store)}
    # The near copy joins the group of the trace curated in the earlier run.
    assert by_id[new[1].id].meta["curate"]["near_dup_group"] == traces[1].id
    assert by_id[new[2].id].meta["curate"]["near_dup_group"] == new[2].id
    assert curated_counts(store)["kept"] == 4

    # --full redoes everything from scratch with the same outcome for the old traces.
    full = curate(store, CurateConfig(ner=False, full=True, near_dup_threshold=0.7))
    assert full.seen == 9 and full.kept == 4


def test_iter_curated_filters_by_task_and_reads_encrypted_payloads(db_url):
    from protege.store import PayloadCipher

    key = PayloadCipher.generate_key()
    store = open_store(db_url, encryption_key=key)
    try:
        a = build_trace(req("my card is 4111 1111 1111 1111, weather in Oslo?"), resp(args='{"city": "Oslo"}'))
        b = build_trace(req("weather in Bergen?"), resp(args='{"city": "Bergen"}'))
        store.add_traces([a, b])
        store.set_task_ids({a.id: "weather", b.id: "other"})
        curate(store, CurateConfig(ner=False))
        with store.engine.connect() as conn:
            stored = dict(conn.execute(sa.text("SELECT trace_id, request FROM curated")).all())
        assert stored[a.id].startswith("fernet:") and "Oslo" not in stored[a.id]
        # Nothing to scrub, nothing stored twice: the curated trace is the raw one.
        assert stored[b.id] is None
        assert [t.request for t in iter_curated(store, task_id="other")] == [b.request]
        got = list(iter_curated(store, task_id="weather"))
        assert [t.id for t in got] == [a.id]
        assert "<CREDIT_CARD_1>" in got[0].request["messages"][1]["content"]
        assert got[0].task_id == "weather"
    finally:
        store.close()


def test_feedback_filter_in_a_run(store):
    good = build_trace(req("weather in Rome?"), resp(args='{"city": "Rome"}'), session_id="s-good")
    bad = build_trace(req("weather in Nice?"), resp(args='{"city": "Nice"}'))
    none = build_trace(req("weather in Turin?"), resp(args='{"city": "Turin"}'))
    store.add_traces([good, bad, none])
    store.add_feedback(Feedback(session_id="s-good", score=1.0))
    store.add_feedback(Feedback(trace_id=bad.id, score=0.0))
    rep = curate(store, CurateConfig(ner=False, feedback_min=0.5))
    assert rep.kept == 1 and rep.dropped == {"feedback": 2}
    assert [t.id for t in iter_curated(store)] == [good.id]


def test_tool_call_arguments_stay_valid_json_after_scrubbing(store):
    args = json.dumps({"city": "Paris", "contact": "bob@example.org", "note": "call +44 20 7946 0958"})
    store.add_traces([build_trace(req("weather for bob@example.org"), resp(args=args))])
    curate(store, CurateConfig(ner=False))
    (t,) = list(iter_curated(store))
    got = json.loads(t.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert got == {"city": "Paris", "contact": "<EMAIL_1>", "note": "call <PHONE_1>"}
    # Same value, same placeholder across request and response of one record.
    assert t.request["messages"][1]["content"] == "weather for <EMAIL_1>"


# -- CLI --------------------------------------------------------------------
def test_cli_curate_dry_run_json_and_table(db_url):
    s = open_store(db_url)
    _seed(s)
    s.close()
    runner = CliRunner()
    res = runner.invoke(cli, ["curate", "--db", db_url, "--dry-run", "--no-ner", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["dry_run"] and data["kept"] == 2 and data["dropped"]["error"] == 1
    res = runner.invoke(cli, ["curate", "--db", db_url, "--no-ner"])
    assert res.exit_code == 0, res.output
    assert "dropped: schema_violation" in res.output and "kept" in res.output
    res = runner.invoke(cli, ["curate", "--db", db_url, "--no-ner", "--json"])
    assert json.loads(res.output)["seen"] == 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["curate", "--near-dup-threshold", "1.5"], "near-dup-threshold"),
        (["curate", "--db", "mysql://nope/db"], "unsupported database"),
    ],
)
def test_cli_errors_are_one_line(args, needle):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.output


def test_cli_curate_needs_key_for_encrypted_store(tmp_path, monkeypatch):
    from protege.store import PayloadCipher

    url = f"sqlite:///{tmp_path / 'enc.db'}"
    s = open_store(url, encryption_key=PayloadCipher.generate_key())
    _seed(s)
    s.close()
    res = CliRunner().invoke(cli, ["curate", "--db", url, "--no-ner"])
    assert res.exit_code == 2
    assert "PROTEGE_ENCRYPTION_KEY" in res.output and "Traceback" not in res.output


def test_near_dup_work_stays_bounded_on_templated_traffic():
    # Thousands of calls from one template land in the same LSH buckets; capped
    # buckets and a cap on exact checks keep the work per call constant.
    idx = NearDupIndex(threshold=0.9, bucket_cap=32, max_checks=4)
    for i in range(3000):
        idx.assign(f"k{i:05d}", f"what's the weather in paris for the next {i % 7} days? ref {i * 7919 % 100000}")
    assert idx.candidates_checked <= 4 * 3000
    assert all(len(b) <= 32 for table in idx._tables for b in table.values())
    # Exact copies of the template still find each other.
    g, _ = idx.assign("copy", "what's the weather in paris for the next 3 days? ref 23757")
    assert g != "copy"


def test_request_decoder_matches_plain_decoding_and_shares_tools():
    from protege.curate.parts import RequestDecoder, tools_digest

    big = [WEATHER_TOOL] * 8  # over the decoder's size floor
    layouts = [
        {"model": "m", "messages": [{"role": "user", "content": "hi ] there"}], "tools": big},
        {"model": "m", "tools": big, "messages": [{"role": "user", "content": "x"}], "stop": ["]"], "user": "u"},
        {"messages": [{"role": "user", "content": '"tools":[1]'}], "metadata": {"tools": [1, 2]}, "tools": big},
        {"messages": [{"role": "user", "content": "no tools"}], "metadata": {"tools": [1] * 300}},
        {"messages": [], "tools": "not a list " * 100},
        {"messages": [], "tools": big, "tool_choice": "auto"},
    ]
    dec = RequestDecoder()
    for r in layouts + layouts:
        text = json.dumps(r, ensure_ascii=False, separators=(",", ":"))
        got, digest = dec.decode(text)
        assert got == json.loads(text)
        assert digest == tools_digest(r.get("tools"))
        assert exact_hash(got, digest) == exact_hash(r)
    a, _ = dec.decode(json.dumps(layouts[0]))
    b, _ = dec.decode(json.dumps({**layouts[0], "messages": [{"role": "user", "content": "other"}]}))
    assert a["tools"] is b["tools"]  # decoded once, shared
    assert dec.stats["hits"] > 0


def test_worker_processes_give_the_same_curated_view(store):
    # Sessions with a shared system prompt naming the user, verbatim repeats
    # across sessions (so across workers), scrubbed values and a bad call.
    traces = []
    for i in range(60):
        session = f"s{i % 7}"
        text = f"weather in city {i % 9}? mail me at user{i % 5}@example.com"
        system = f"You help {['Maria Garcia', 'John Peters', 'Aisha Khan'][i % 3]} with travel plans."
        args = '{"city": "Paris"}' if i % 11 else '{"days": 2}'
        traces.append(build_trace(req(text, system=system), resp(args=args), session_id=session))
    store.add_traces(traces)

    def view():
        return {
            t.id: (t.request["messages"], t.meta["curate"]["exact_hash"], t.meta["curate"]["near_dup_group"])
            for t in iter_curated(store)
        }

    one = curate(store, CurateConfig(ner=False, workers=1))
    first = view()
    two = curate(store, CurateConfig(ner=False, full=True, workers=2, parallel_min=1, batch_size=7))
    assert (two.seen, two.kept, two.dropped, two.scrubbed) == (one.seen, one.kept, one.dropped, one.scrubbed)
    assert two.dropped["schema_violation"] == 6 and two.dropped["exact_duplicate"] > 0
    second = view()
    assert {k: v[:2] for k, v in second.items()} == {k: v[:2] for k, v in first.items()}
    assert all("@example.com" not in json.dumps(v[0]) for v in second.values())
