"""``protege demo --capture-only`` (``make demo-capture``): the capture stage
alone, offline, in well under a minute.

1. a fake teacher (an OpenAI-compatible server on loopback) stands in for the LLM;
2. the protege gateway runs in front of it on a free loopback port;
3. a scripted agent, using the official ``openai`` SDK with ``base_url`` set to
   the gateway, makes a few dozen calls: tool calls (single and parallel, with
   the tool results sent back), streaming, JSON extraction, classification,
   a teacher error; then it leaves feedback on one session;
4. the captured traces are summarised from the store.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

WEATHER_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather forecast for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city", "days"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Local time in a timezone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Tunis", "Quebec", "Perth"]
TICKETS = ["My invoice is wrong", "The app crashes on login", "How do I export my data?", "Refund please",
           "Password reset link expired", "Dark mode request"]


def _agent(base_url: str, sessions: int) -> dict[str, Any]:
    """A scripted agent: what a real one built on the openai SDK would send."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-demo", max_retries=0, timeout=30)
    calls = errors = 0
    trace_ids: list[str] = []
    for s in range(sessions):
        session = f"demo-run-{s + 1}"
        city = CITIES[s % len(CITIES)]
        headers = {"X-Protege-Session": session, "X-Protege-Client": "demo-agent"}

        # 1. Tool-calling step (parallel tools), then the tool results go back.
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a travel assistant. Use the tools."},
            {"role": "user", "content": f"Weather in {city} for 3 days, and the local time?"},
        ]
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages, tools=WEATHER_TOOLS, parallel_tool_calls=s % 2 == 0,
            extra_headers={**headers, "X-Protege-Task": "plan-tools"})
        calls += 1
        trace_ids.append(raw.headers["x-protege-trace-id"])
        reply = raw.parse().choices[0].message
        messages.append(reply.model_dump(exclude_none=True))
        for tc in reply.tool_calls or []:
            result = {"city": city, "forecast": "sunny"} if tc.function.name == "get_weather" else {"time": "12:00"}
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": json.dumps(result)})

        # 2. The answer to the user, streamed.
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True},
            extra_headers={**headers, "X-Protege-Task": "answer"})
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        calls += 1

        # 3. A streamed tool call (the gateway reassembles the argument fragments).
        for _ in client.chat.completions.create(
            model="gpt-4o-mini", stream=True, tools=WEATHER_TOOLS[:1], tool_choice="required",
            messages=[{"role": "user", "content": f"Forecast for {city}?"}],
            extra_headers={**headers, "X-Protege-Task": "forecast-tool"},
        ):
            pass
        calls += 1

        # 4. Extraction with a JSON schema, 5. classification of a ticket.
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "Extract the city as JSON."},
                      {"role": "user", "content": f"I am flying to {city} next week."}],
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": {
                "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
            extra_headers={**headers, "X-Protege-Task": "extract-city"})
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "Classify the ticket: billing, bug, question, other."},
                      {"role": "user", "content": TICKETS[s % len(TICKETS)]}],
            extra_headers={**headers, "X-Protege-Task": "classify-ticket"})
        calls += 2

    # The teacher fails sometimes; the failure is captured too.
    try:
        client.chat.completions.create(model="fake-error-503", messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError:
        errors += 1
    calls += 1

    # Feedback: the user liked the first session's outcome.
    import httpx

    httpx.post(base_url.rstrip("/") + "/feedback", json={"session_id": "demo-run-1", "score": 1.0,
                                                         "label": "helpful"}, timeout=10).raise_for_status()
    httpx.post(base_url.rstrip("/") + "/feedback", json={"trace_id": trace_ids[0], "label": "correct-tools"},
               timeout=10).raise_for_status()
    return {"calls": calls, "teacher_errors": errors, "sessions": sessions}


def run_capture(home: Path | None = None, *, sessions: int = 8, quiet: bool = False) -> dict[str, Any]:
    """Run the capture tour; returns what the agent did and what the store holds."""
    from protege.capture.writer import WriterConfig
    from protege.config import protege_home
    from protege.database import open_store
    from protege.gateway.config import GatewayConfig
    from protege.gateway.server import ServerThread
    from protege.testing.fake_teacher_server import FakeTeacherServerThread

    home = home or protege_home() / "demo"
    home.mkdir(parents=True, exist_ok=True)
    db_path = home / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    db_url = f"sqlite:///{db_path}"
    t0 = time.perf_counter()
    with FakeTeacherServerThread(chunk_delay_s=0.001) as teacher:
        cfg = GatewayConfig(teacher=teacher.url, db_url=db_url, gateway_keys=[], keys_file=home / "no-keys.json",
                            capture=WriterConfig(spool_path=home / "spool.jsonl"))
        with ServerThread(cfg) as gateway:
            if not quiet:
                print(f"fake teacher  {teacher.url}\ngateway       {gateway.url}/v1\nstore         {db_url}\n")
            agent = _agent(gateway.url + "/v1", sessions)
        # Leaving the block shut the gateway down, which flushed every trace.
    elapsed = time.perf_counter() - t0

    store = open_store(db_url)
    try:
        rows = store.trace_columns(["task_tag", "status", "stream", "latency_ms", "ttft_ms", "tools_called",
                                    "prompt_tokens", "completion_tokens", "session_id"])
        feedback = store.feedback_for(session_id="demo-run-1")
        first_tools = next((t for t in store.iter_traces(task_tag="plan-tools")), None)
    finally:
        store.close()
    by_task = Counter(r["task_tag"] or "(untagged)" for r in rows)
    lat = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    summary = {
        "agent": agent,
        "seconds": round(elapsed, 2),
        "db_url": db_url,
        "traces": len(rows),
        "errors": sum(1 for r in rows if r["status"] != "ok"),
        "streamed": sum(1 for r in rows if r["stream"]),
        "with_tool_calls": sum(1 for r in rows if r["tools_called"] not in (None, "[]", [])),
        "by_task": dict(by_task),
        "sessions": len({r["session_id"] for r in rows if r["session_id"]}),
        "tokens": sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in rows),
        "latency_ms_p50": round(statistics.median(lat), 2) if lat else None,
        "feedback_on_session": len(feedback),
        "example_tool_calls": (first_tools.response or {}).get("choices", [{}])[0].get("message", {}).get(
            "tool_calls") if first_tools else None,
    }
    if not quiet:
        _print_summary(summary)
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    table = Table(title=f"captured by the gateway ({s['traces']} traces in {s['seconds']} s)")
    table.add_column("task (X-Protege-Task)")
    table.add_column("traces", justify="right")
    for task, n in sorted(s["by_task"].items()):
        table.add_row(task, str(n))
    con.print(table)
    con.print(f"agent calls {s['agent']['calls']} = traces stored {s['traces']}; errors captured {s['errors']}; "
              f"streamed {s['streamed']}; with tool calls {s['with_tool_calls']}; sessions {s['sessions']}; "
              f"tokens {s['tokens']}; gateway latency p50 {s['latency_ms_p50']} ms; "
              f"feedback on demo-run-1: {s['feedback_on_session']}")
    if s["example_tool_calls"]:
        con.print("reassembled tool calls of one call:", s["example_tool_calls"])
    con.print(f"\nlook around:  protege logs stats --db {s['db_url']}\n"
              f"              protege logs list --db {s['db_url']} --limit 5")
