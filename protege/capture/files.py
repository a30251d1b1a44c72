"""JSONL import and export of traces.

Import reads two formats, one record per line:

* request/response records, ``{"timestamp", "workload_id", "client_id",
  "request": {...}, "response": {...}}`` (the NVIDIA Data Flywheel log format).
  ``protege logs export --format raw`` writes this shape too, plus every
  extracted column, so an export re-imports as the same traces;
* OpenAI fine-tuning chat records, ``{"messages": [...], "tools": [...]}``,
  whose last assistant message is the response.

Trace ids are derived from the record (ULID layout: the record's timestamp in
the time part, a hash of the record in the random part), so importing a file
twice stores each record once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from protege.capture.extract import build_trace
from protege.ids import _ALPHABET, _encode
from protege.safejson import json_loads
from protege.store.records import Trace

if TYPE_CHECKING:
    from protege.store.db import TraceStore

FORMATS = ("auto", "flywheel", "openai")
# Files up to this size are parsed once (their checked traces kept in memory);
# larger ones are read twice, checking then importing, so memory stays flat.
KEEP_CHECKED_BYTES = 32 * 1024 * 1024
EXPORT_FORMATS = ("raw", "openai")
# Extracted columns an export carries that a re-import restores. ``task_id`` is
# left out: it names a task in the store the trace came from.
_RESTORED = (
    "session_id", "served_by", "adapter", "status", "http_status", "error", "fallback_reason",
    "latency_ms", "ttft_ms", "cost_usd", "meta", "upstream_model",
)


_KNOWN_KEYS = frozenset(Trace.__dataclass_fields__) | {"timestamp", "workload_id"}


class RecordError(ValueError):
    """One line of an import file is not a record we can read."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass
class ImportResult:
    read: int = 0  # non-blank lines seen
    imported: int = 0  # new traces stored
    duplicates: int = 0  # records already in the store (or twice in the file)
    skipped: int = 0  # invalid lines passed over with skip_invalid
    errors: list[str] = field(default_factory=list)  # the first few skipped lines, why

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read, "imported": self.imported, "duplicates": self.duplicates,
            "skipped": self.skipped, "errors": self.errors,
        }


# -- ids -----------------------------------------------------------------------
def _canonical(value: Any) -> bytes:
    import orjson

    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # beyond orjson (e.g. integers over 64 bits): same record, same path
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def content_id(record: Any, created_at: float) -> str:
    """A deterministic ULID: ``created_at`` milliseconds, then 80 bits of the
    record's hash. Same record and time, same id; still sorts by time."""
    ms = max(0, int(round(created_at * 1000)))
    digest = hashlib.sha256(_canonical(record) + b"|" + str(ms).encode()).digest()
    return _encode(ms, 10) + _encode(int.from_bytes(digest[:10], "big"), 16)


def _is_ulid(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 26 and all(c in _ALPHABET for c in value)


def parse_timestamp(value: Any) -> float:
    """Epoch seconds (or milliseconds), a numeric string, or ISO 8601 -> epoch seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise ValueError(f"not a timestamp: {value!r} (use epoch seconds or ISO 8601)") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt.timestamp()
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if ts > 1e11:  # epoch milliseconds (year 5138 in seconds)
        ts /= 1000.0
    return ts


# -- record -> trace -------------------------------------------------------------
def detect_format(record: dict[str, Any]) -> str | None:
    if "request" in record and ("response" in record or "error" in record):
        return "flywheel"
    if isinstance(record.get("messages"), list):
        return "openai"
    return None


def _flywheel_trace(record: dict[str, Any], line: int, source: str) -> Trace:
    request = record.get("request")
    response = record.get("response")
    if not isinstance(request, dict):
        raise RecordError(line, "'request' must be a JSON object (an OpenAI chat request)")
    failed = record.get("status") == "error" or (response is None and record.get("error"))
    if not isinstance(request.get("messages"), list) and not failed:
        # A failed call may be a malformed request (the gateway keeps those too).
        raise RecordError(line, "'request' has no 'messages' list")
    if response is None and not failed:
        raise RecordError(line, "'response' is missing (only an error record may leave it null)")
    if response is not None and (not isinstance(response, dict) or not isinstance(response.get("choices"), list)):
        raise RecordError(line, "'response' must be a chat.completion object with a 'choices' list")
    stamp = record.get("timestamp", record.get("created_at"))
    if stamp is None and isinstance(response, dict):
        stamp = response.get("created")
    if stamp is None:
        raise RecordError(line, "no 'timestamp' (epoch seconds or ISO 8601)")
    try:
        created_at = parse_timestamp(stamp)
    except ValueError as exc:
        raise RecordError(line, str(exc)) from None
    fields: dict[str, Any] = {k: record[k] for k in _RESTORED if record.get(k) is not None}
    if fields.get("status") not in (None, "ok", "error"):
        raise RecordError(line, f"'status' must be ok or error, not {fields['status']!r}")
    if failed:
        fields["status"] = "error"
        fields.setdefault("error", str(record.get("error") or "error"))
    trace_id = record["id"] if _is_ulid(record.get("id")) else content_id(record, created_at)
    extra = {k: v for k, v in record.items() if k not in _KNOWN_KEYS}
    if extra:
        # Keys protege has no column for stay with the trace, so nothing is lost.
        meta = dict(fields.get("meta") or {})
        meta["record"] = {**meta.get("record", {}), **extra}
        fields["meta"] = meta
    tag = record.get("workload_id", record.get("task_tag"))
    client = record.get("client_id")
    return build_trace(
        request,
        response,
        id=trace_id,
        created_at=created_at,
        source=source,
        task_tag=str(tag) if tag is not None else None,
        client_id=str(client) if client is not None else None,
        **fields,
    )


def _openai_trace(record: dict[str, Any], line: int, source: str, now: float) -> tuple[Trace, bool]:
    messages = record["messages"]
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        raise RecordError(line, "the last message must be the assistant's answer (role 'assistant')")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise RecordError(line, "every message must be an object with a 'role'")
    stamp = record.get("timestamp")
    try:
        created_at = parse_timestamp(stamp) if stamp is not None else now
    except ValueError as exc:
        raise RecordError(line, str(exc)) from None
    answer = {k: v for k, v in messages[-1].items() if k != "weight"}
    request: dict[str, Any] = {"messages": messages[:-1]}
    for key in ("model", "tools", "tool_choice", "parallel_tool_calls", "response_format", "functions"):
        if record.get(key) is not None:
            request[key] = record[key]
    if not request["messages"]:
        raise RecordError(line, "no input messages before the assistant's answer")
    digest = hashlib.sha256(_canonical(record)).hexdigest()
    response = {
        "id": f"chatcmpl-import-{digest[:24]}",
        "object": "chat.completion",
        "created": int(created_at),
        "model": record.get("model"),
        "choices": [
            {
                "index": 0,
                "message": answer,
                "logprobs": None,
                "finish_reason": "tool_calls" if answer.get("tool_calls") else "stop",
            }
        ],
    }
    if stamp is None:
        # No time in the record: the time part is "now" and the hash part alone
        # (``content_id`` at time 0) recognises a re-import.
        trace_id = content_id(record, created_at)[:10] + content_id(record, 0.0)[10:]
    else:
        trace_id = content_id(record, created_at)
    trace = build_trace(
        request,
        response,
        id=trace_id,
        created_at=created_at,
        source=source,
        task_tag=record.get("workload_id"),
        client_id=record.get("client_id"),
    )
    return trace, stamp is None


def record_to_trace(
    record: Any, *, line: int = 0, fmt: str = "auto", source: str = "import", now: float | None = None
) -> tuple[Trace, bool]:
    """One decoded JSONL record -> (trace, whether its id has an import-time
    time part). Raises ``RecordError`` naming the line."""
    if not isinstance(record, dict):
        raise RecordError(line, "not a JSON object")
    kind = detect_format(record) if fmt == "auto" else fmt
    if kind == "flywheel":
        if "request" not in record:
            raise RecordError(line, "not a request/response record (no 'request')")
        return _flywheel_trace(record, line, source), False
    if kind == "openai":
        if not isinstance(record.get("messages"), list):
            raise RecordError(line, "not a chat record (no 'messages' list)")
        return _openai_trace(record, line, source, time.time() if now is None else now)
    raise RecordError(
        line, "neither a request/response record ('request', 'response') nor a chat record ('messages')"
    )


# -- import ------------------------------------------------------------------------
def _lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes, int]]:
    for number, raw in enumerate(fh, start=1):
        yield number, raw, len(raw)


def _decode(number: int, raw: bytes) -> Any:
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark, as some editors write
    try:
        return json_loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(number, f"not valid JSON ({exc})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"not a file: {path}")


def import_jsonl(
    store: TraceStore,
    path: str | Path,
    *,
    fmt: str = "auto",
    source: str = "import",
    skip_invalid: bool = False,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import ``path`` into ``store``.

    Without ``skip_invalid`` the whole file is checked first and the first bad
    line raises ``RecordError`` with nothing stored; with it, bad lines are
    counted and passed over. ``progress`` receives bytes read as they go (the
    checking pass and the import pass each read the file once).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r} (use one of {', '.join(FORMATS)})")
    path = Path(path)
    _check_file(path)
    now = time.time()
    checked: list[tuple[Trace, bool]] | None = None
    if not skip_invalid:
        # A small file's checked traces are kept, so it is read only once.
        keep = path.stat().st_size <= KEEP_CHECKED_BYTES
        checked = [] if keep else None
        with open(path, "rb") as fh:
            for number, raw, size in _lines(fh):
                if raw.strip():
                    item = record_to_trace(_decode(number, raw), line=number, fmt=fmt, source=source, now=now)
                    if checked is not None:
                        checked.append(item)
                if progress:
                    progress(size)

    result = ImportResult()
    known_suffixes: set[str] | None = None
    batch: list[tuple[Trace, bool]] = []

    def flush() -> None:
        nonlocal known_suffixes
        if not batch:
            return
        traces: dict[str, Trace] = {}
        for trace, undated in batch:
            if undated:
                if known_suffixes is None:
                    known_suffixes = {r["id"][10:] for r in store.trace_columns(["id"])}
                if trace.id[10:] in known_suffixes:
                    continue
                known_suffixes.add(trace.id[10:])
            traces.setdefault(trace.id, trace)
        existing = {r["id"] for r in store.trace_columns(["id"], ids=list(traces))} if traces else set()
        fresh = [t for tid, t in traces.items() if tid not in existing]
        if fresh:
            store.add_traces(fresh)
        result.imported += len(fresh)
        result.duplicates += len(batch) - len(fresh)
        batch.clear()

    if checked is not None:
        for item in checked:
            result.read += 1
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        flush()
        if progress:
            progress(path.stat().st_size)
        return result

    with open(path, "rb") as fh:
        for number, raw, size in _lines(fh):
            if progress:
                progress(size)
            if not raw.strip():
                continue
            result.read += 1
            try:
                batch.append(record_to_trace(_decode(number, raw), line=number, fmt=fmt, source=source, now=now))
            except RecordError as exc:
                if not skip_invalid:
                    raise
                result.skipped += 1
                if len(result.errors) < 20:
                    result.errors.append(str(exc))
                continue
            if len(batch) >= batch_size:
                flush()
    flush()
    return result


# -- export ------------------------------------------------------------------------
def raw_record(trace: Trace) -> dict[str, Any]:
    """The verbatim request and response, every extracted column, and the
    Data Flywheel keys (``timestamp``, ``workload_id``) so it re-imports."""
    data = trace.to_dict()
    out: dict[str, Any] = {
        "id": trace.id,
        "timestamp": trace.created_at,
        "workload_id": trace.task_tag,
        "client_id": trace.client_id,
        "request": trace.request,
        "response": trace.response,
    }
    for key, value in data.items():
        if key not in out:
            out[key] = value
    return out


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if v is not None and k in ("role", "content", "tool_calls", "function_call", "name", "refusal")}


def openai_record(trace: Trace) -> dict[str, Any] | None:
    """A fine-tuning chat record: the input messages plus the first choice's
    answer. ``None`` for a trace with no answer to learn from."""
    if trace.status != "ok" or not isinstance(trace.response, dict):
        return None
    choices = trace.response.get("choices") or []
    if not choices or not isinstance(choices[0].get("message"), dict):
        return None
    request = trace.request or {}
    messages = list(request.get("messages") or [])
    answer = _clean_message(choices[0]["message"])
    answer["role"] = "assistant"
    record: dict[str, Any] = {"messages": [*messages, answer]}
    for key in ("tools", "parallel_tool_calls"):
        if request.get(key) is not None:
            record[key] = request[key]
    return record


def export_jsonl(
    traces: Iterable[Trace],
    out: IO[str],
    *,
    fmt: str = "raw",
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Write ``traces`` as JSONL; returns (written, left out). The openai format
    leaves out failed calls (no answer to learn from)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use raw or openai)")
    written = left_out = 0
    for trace in traces:
        record = raw_record(trace) if fmt == "raw" else openai_record(trace)
        if progress:
            progress(1)
        if record is None:
            left_out += 1
            continue
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += 1
    return written, left_out
