"""JSONL import/export: Data Flywheel records, OpenAI fine-tuning records, round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protege.capture.files import (
    RecordError,
    content_id,
    export_jsonl,
    import_jsonl,
    openai_record,
    parse_timestamp,
    record_to_trace,
)
from protege.ids import id_time


def flywheel_record(i: int, **over: Any) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    rec = {
        "timestamp": 1_730_000_000 + i * 60,
        "workload_id": f"wl-{i % 3}",
        "client_id": "dev-app",
        "request": {
            "model": "meta/llama-3.1-70b-instruct",
            "messages": [{"role": "system", "content": "Be brief. é ✓"}, {"role": "user", "content": f"question {i}"}],
            "tools": tools,
            "temperature": 0.1 + i / 1000,
            "vendor_opt": {"nested": [i, None, True]},
        },
        "response": {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "created": 1_730_000_000 + i * 60,
            "model": "meta/llama-3.1-70b-instruct",
            "choices": [
                {
                    "index": 0,
                    "message": (
                        {"role": "assistant", "content": None, "tool_calls": [
                            {"id": f"call_{i}", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"q": f"q{i}"})}}
                        ]}
                        if i % 2
                        else {"role": "assistant", "content": f"answer {i}"}
                    ),
                    "finish_reason": "tool_calls" if i % 2 else "stop",
                }
            ],
            "usage": {"prompt_tokens": 30 + i, "completion_tokens": 7, "total_tokens": 37 + i},
        },
    }
    rec.update(over)
    return rec


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_parse_timestamp_forms():
    assert parse_timestamp(1_730_000_000) == 1_730_000_000.0
    assert parse_timestamp("1730000000.5") == 1_730_000_000.5
    assert parse_timestamp(1_730_000_000_123) == pytest.approx(1_730_000_000.123)  # milliseconds
    assert parse_timestamp("2024-10-27T03:33:20Z") == 1_730_000_000.0
    assert parse_timestamp("2024-10-27T05:33:20+02:00") == 1_730_000_000.0
    assert parse_timestamp("2024-10-27 03:33:20") == 1_730_000_000.0  # naive means UTC
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def test_content_id_is_deterministic_and_time_sortable():
    rec = flywheel_record(1)
    a, b = content_id(rec, 1_730_000_000.0), content_id(rec, 1_730_000_000.0)
    assert a == b and len(a) == 26
    assert id_time(a) == 1_730_000_000.0
    assert content_id(flywheel_record(2), 1_730_000_000.0) != a
    assert content_id(rec, 1_730_000_001.0) > a


def test_flywheel_record_fields():
    trace, _ = record_to_trace(flywheel_record(1, timestamp="2024-10-27T03:34:20Z", trace_note="kept"), line=1)
    assert (trace.task_tag, trace.client_id, trace.created_at) == ("wl-1", "dev-app", 1_730_000_060.0)
    assert trace.source == "import" and trace.tools_called == ["lookup"]
    assert trace.prompt_tokens == 31 and trace.finish_reason == "tool_calls"
    assert trace.meta["record"] == {"trace_note": "kept"}  # unknown keys are not dropped


def test_openai_finetuning_record_becomes_a_completion():
    rec = {
        "messages": [
            {"role": "system", "content": "You route tickets."},
            {"role": "user", "content": "my card was charged twice"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "route", "arguments": "{\"team\": \"billing\"}"}}], "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}],
        "parallel_tool_calls": False,
    }
    trace, undated = record_to_trace(rec, line=1, now=1_800_000_000.0)
    assert undated and trace.created_at == 1_800_000_000.0
    assert trace.request == {"messages": rec["messages"][:2], "tools": rec["tools"], "parallel_tool_calls": False}
    msg = trace.response["choices"][0]["message"]
    assert "weight" not in msg and msg["tool_calls"][0]["function"]["name"] == "route"
    assert trace.response["object"] == "chat.completion" and trace.finish_reason == "tool_calls"
    assert trace.tools_called == ["route"]
    # Its export is the record back (minus the training-only weight).
    exported = openai_record(trace)
    assert exported["messages"][:2] == rec["messages"][:2]
    assert exported["messages"][2] == {k: v for k, v in rec["messages"][2].items() if k not in ("weight", "content")}
    assert exported["tools"] == rec["tools"] and exported["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    "record, message",
    [
        ("[1, 2]", "not a JSON object"),
        ({"hello": 1}, "neither a request/response record"),
        ({"request": {"model": "m"}, "response": {"choices": []}, "timestamp": 1}, "no 'messages'"),
        ({"request": {"messages": []}, "response": {"x": 1}, "timestamp": 1}, "'choices' list"),
        ({"request": {"messages": []}, "response": {"choices": []}}, "no 'timestamp'"),
        ({"request": {"messages": []}, "response": {"choices": []}, "timestamp": "soon"}, "not a timestamp"),
        ({"messages": [{"role": "user", "content": "x"}]}, "last message must be the assistant"),
    ],
)
def test_bad_records_are_named(record, message):
    rec = json.loads(record) if isinstance(record, str) else record
    with pytest.raises(RecordError, match=message) as info:
        record_to_trace(rec, line=7)
    assert str(info.value).startswith("line 7: ")


def test_import_twice_does_not_duplicate_and_round_trips(store, tmp_path):
    records = [flywheel_record(i) for i in range(25)]
    path = write_jsonl(tmp_path / "flywheel.jsonl", records)
    first = import_jsonl(store, path, batch_size=10)
    assert (first.read, first.imported, first.duplicates, first.skipped) == (25, 25, 0, 0)
    again = import_jsonl(store, path, batch_size=10)
    assert (again.imported, again.duplicates) == (0, 25)
    assert store.count_traces() == 25
    assert store.count_traces(task_tag="wl-0") == 9

    out = tmp_path / "raw.jsonl"
    with open(out, "w", encoding="utf-8") as fh:
        written, left = export_jsonl(store.iter_traces(), fh, fmt="raw")
    assert (written, left) == (25, 0)
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # Oldest first, every request and response back unchanged, extracted fields beside them.
    assert [e["request"] for e in exported] == [r["request"] for r in records]
    assert [e["response"] for e in exported] == [r["response"] for r in records]
    assert [(e["workload_id"], e["client_id"], e["timestamp"]) for e in exported] == [
        (r["workload_id"], r["client_id"], float(r["timestamp"])) for r in records
    ]
    assert exported[1]["tools_called"] == ["lookup"] and exported[1]["prompt_tokens"] == 31
    assert "task_id" in exported[0]
    # The raw export imports back as the same traces (same ids): nothing new.
    back = import_jsonl(store, out)
    assert (back.imported, back.duplicates) == (0, 25)


def test_bad_line_stops_everything_unless_skipped(store, tmp_path):
    lines = [flywheel_record(0), flywheel_record(1), "{not json", flywheel_record(2), {"nope": True}]
    path = write_jsonl(tmp_path / "mixed.jsonl", lines)
    with pytest.raises(RecordError, match="^line 3: not valid JSON"):
        import_jsonl(store, path)
    assert store.count_traces() == 0  # nothing half-imported

    result = import_jsonl(store, path, skip_invalid=True)
    assert (result.read, result.imported, result.skipped) == (5, 3, 2)
    assert result.errors[0].startswith("line 3:") and result.errors[1].startswith("line 5:")


def test_undated_openai_records_are_not_duplicated(store, tmp_path):
    recs = [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "ft.jsonl", [*recs, recs[0]])
    first = import_jsonl(store, path, fmt="openai")
    assert (first.imported, first.duplicates) == (3, 1)
    second = import_jsonl(store, path)
    assert (second.imported, second.duplicates) == (0, 4)
    assert store.count_traces(source="import") == 3


def test_byte_order_mark_and_blank_lines(store, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(flywheel_record(0)).encode() + b"\r\n\r\n" + json.dumps(flywheel_record(1)).encode())
    result = import_jsonl(store, path)
    assert (result.read, result.imported) == (2, 2)


def test_error_records_import():
    rec = {"timestamp": 1_730_000_000, "request": {"model": "m", "messages": "oops"}, "response": None,
           "status": "error", "http_status": 400, "error": "invalid request", "client_id": "c"}
    trace, _ = record_to_trace(rec, line=1)
    assert (trace.status, trace.http_status, trace.error, trace.response) == ("error", 400, "invalid request", None)
    assert openai_record(trace) is None  # nothing to fine-tune on
    with pytest.raises(RecordError, match="'response' is missing"):
        record_to_trace({**rec, "request": {"messages": []}, "status": None, "error": None}, line=1)


def test_missing_file(store, tmp_path):
    with pytest.raises(FileNotFoundError):
        import_jsonl(store, tmp_path / "absent.jsonl")


def test_large_file_path_reads_twice_with_same_result(store, tmp_path, monkeypatch):
    from protege.capture import files

    monkeypatch.setattr(files, "KEEP_CHECKED_BYTES", 0)  # as if the file were big
    path = write_jsonl(tmp_path / "big.jsonl", [flywheel_record(i) for i in range(12)])
    seen: list[int] = []
    result = import_jsonl(store, path, batch_size=5, progress=seen.append)
    assert (result.read, result.imported, result.duplicates) == (12, 12, 0)
    assert sum(seen) == 2 * path.stat().st_size  # checked, then imported
    bad = write_jsonl(tmp_path / "bad.jsonl", [flywheel_record(20), "nope"])
    with pytest.raises(RecordError, match="line 2"):
        import_jsonl(store, bad)
    assert store.count_traces() == 12
