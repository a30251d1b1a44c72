from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from protege.capture import build_trace
from protege.database import open_store
from protege.report import collect_report, render_html

XSS = "<script>alert('x')</script>"
XSS_REASON = '<img src=x onerror="alert(2)">'
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _request(task: str, text: str) -> dict[str, Any]:
    req: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": f"You do {task}."}, {"role": "user", "content": text}],
    }
    if task == "weather":
        req["tools"] = [WEATHER_TOOL]
    return req


def _response(task: str, text: str, model: str = "gpt-4o") -> dict[str, Any]:
    if task == "weather":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": text})},
                }
            ],
        }
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": "spam" if "buy" in text else "ham"}
        finish = "stop"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


# What the seeded store holds, so tests compute expectations from it.
PLAN = {
    # task: (teacher calls, teacher cost, student calls, student cost, fallbacks)
    "weather": (30, 0.002, 50, 0.0001, 6),
    "triage": (20, 0.001, 10, None, 0),
}
FALLBACK_REASONS = ["schema:get_weather:'city' is a required property"] * 4 + [
    "engine_error:TimeoutError",
    XSS_REASON,
]


def seed(store: Any, *, evaluations: bool = True) -> dict[str, Any]:
    """Traces over two days for two tasks (teacher, student, fallback), one
    unassigned call and one call full of markup; an evaluation with baselines,
    a gate decision, a route, adapters and shadow results."""
    start = math.floor(time.time() / 3600) * 3600 - 40 * 3600
    traces = []
    i = 0
    for task, (n_teacher, c_teacher, n_student, c_student, n_fallback) in PLAN.items():
        for k in range(n_teacher + n_student + n_fallback):
            who = "teacher" if k < n_teacher else "student" if k < n_teacher + n_student else "fallback"
            text = f"buy item {k}" if k % 2 else f"city {k}"
            cost = c_teacher if who != "student" else c_student
            traces.append(
                build_trace(
                    _request(task, text),
                    _response(task, text, "smollm2" if who == "student" else "gpt-4o"),
                    created_at=start + i * 1200.0,
                    task_id=task,
                    served_by=who,
                    adapter="adapter-x" if who != "teacher" else None,
                    cost_usd=cost,
                    latency_ms=800.0 if who != "student" else 90.0,
                    fallback_reason=FALLBACK_REASONS[k % len(FALLBACK_REASONS)]
                    if who == "fallback"
                    else None,
                    source="gateway",
                )
            )
            if who == "student" and cost is None:
                traces[-1].cost_usd = None  # build_trace leaves a student's cost unset
            i += 1
    # One unassigned call that failed, carrying markup everywhere it can.
    traces.append(
        build_trace(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": XSS}], "tools": [WEATHER_TOOL]},
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": XSS,
                            "tool_calls": [
                                {
                                    "id": "c",
                                    "type": "function",
                                    "function": {
                                        "name": "get_weather",
                                        "arguments": json.dumps({"city": XSS}),
                                    },
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
            },
            created_at=start + i * 1200.0,
            status="error",
            error=XSS,
            cost_usd=0.003,
        )
    )
    traces[-1].id = "01XSSTRACE0000000000000000"
    store.add_traces(traces)
    out: dict[str, Any] = {"start": start, "xss_id": traces[-1].id, "n": len(traces)}
    out["shadowed"] = [t.id for t in traces if t.task_id == "weather" and t.served_by == "teacher"][:21]
    if evaluations:
        out.update(_seed_stages(store, out["shadowed"]))
    return out


def _seed_stages(store: Any, shadowed: list[str]) -> dict[str, Any]:
    from protege.evaluate import EvalConfig, FunctionPredictor, evaluate_task, gate
    from protege.evaluate.runner import TaskData
    from protege.registry import Registry
    from protege.router.migrations import shadow_results
    from protege.router.routes import set_route

    rows = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": f"m{i}"}],
            "tools": None,
            "completion": {"role": "assistant", "content": "spam" if i % 2 else "ham"},
        }
        for i in range(80)
    ]
    index = {r["id"]: i for i, r in enumerate(rows)}

    def predictor(name: str, wrong_every: int) -> FunctionPredictor:
        def answer(row: dict[str, Any]) -> dict[str, Any]:
            i = index[row["id"]]
            if i % wrong_every == 0:
                return {"role": "assistant", "content": "ham" if i % 2 else "spam"}
            return dict(row["completion"])

        return FunctionPredictor(name, answer)

    registry = Registry(store)
    data = TaskData({"output_type": "label", "version": "v1", "hash": "h"}, [], rows)
    reports = {}
    v1 = registry.register("triage", base_model="tiny", path="/nonexistent")
    reports["v1"] = evaluate_task(
        store,
        "triage",
        adapter=v1.id,
        data=data,
        baselines=True,
        config=EvalConfig(n_resamples=300),
        predictors={
            "student": predictor("student", 5),
            "base_zero_shot": predictor("zero", 2),
            "base_few_shot": predictor("few", 3),
        },
    )
    v2 = registry.register("triage", base_model="tiny", path="/nonexistent")
    reports["v2"] = evaluate_task(
        store,
        "triage",
        adapter=v2.id,
        data=data,
        baselines=True,
        config=EvalConfig(n_resamples=300),
        predictors={
            "student": predictor("student", 40),
            "base_zero_shot": predictor("zero", 2),
            "base_few_shot": predictor("few", 3),
        },
    )
    decision = gate(store, "triage", v2.id)
    set_route(store, "triage", "canary:20", reason="test")
    now = time.time()
    shadow_rows = [
        {
            "trace_id": shadowed[i],
            "task_id": "weather",
            "adapter": "weather:v1",
            "agree": int(i % 4 != 0),
            "valid": int(i % 10 != 0),
            "reasons": None,
            "student_response": None,
            "latency_ms": 100.0,
            "created_at": now - 60,
        }
        for i in range(20)
    ]
    shadow_rows[1]["student_response"] = json.dumps({"role": "assistant", "content": "<i>shadow answer</i>"})
    shadow_rows.append(
        {
            **shadow_rows[0],
            "trace_id": shadowed[20],
            "agree": None,
            "valid": 0,
            "reasons": json.dumps(["arguments_not_json:get_weather"]),
        }
    )
    with store.engine.begin() as conn:
        conn.execute(shadow_results.insert(), shadow_rows)
    return {"reports": reports, "decision": decision, "adapters": {"v1": v1, "v2": v2}}


# --------------------------------------------------------------------------- data


def test_report_data_counts_traffic_savings_and_fallbacks(store):
    seeded = seed(store)
    data = collect_report(store)
    json.dumps(data)  # plain JSON, as --json writes it
    tasks = {t["task_id"]: t for t in data["tasks"]}
    assert set(tasks) == {"weather", "triage", "(unassigned)"}
    total = seeded["n"]
    assert data["totals"]["calls"] == total
    for task, (n_t, c_t, n_s, c_s, n_f) in PLAN.items():
        t = tasks[task]
        assert t["served"] == {"teacher": n_t, "student": n_s, "fallback": n_f}
        assert t["traffic_share"] == pytest.approx((n_t + n_s + n_f) / total)
        # Teacher average from its own (and fallback) traces; the student's cost subtracted.
        assert t["teacher_cost_per_call"] == pytest.approx(c_t)
        assert t["saved_usd"] == pytest.approx(n_s * (c_t - (c_s or 0.0)))
        assert t["latency_ms"]["student"] == pytest.approx(90.0)
    assert tasks["(unassigned)"]["errors"] == 1
    saved = sum(n_s * (c_t - (c_s or 0.0)) for n_t, c_t, n_s, c_s, n_f in PLAN.values())
    assert data["totals"]["saved_usd"] == pytest.approx(saved)
    spent = sum(n_t * c_t + n_s * (c_s or 0) + n_f * c_t for n_t, c_t, n_s, c_s, n_f in PLAN.values()) + 0.003
    assert data["totals"]["cost_usd"] == pytest.approx(spent)
    assert data["totals"]["teacher_only_cost_usd"] == pytest.approx(spent + saved)
    assert tasks["weather"]["cost_share"] == pytest.approx((30 * 0.002 + 50 * 0.0001 + 6 * 0.002) / spent)

    # Savings over time: hourly buckets over the ~2 days, cumulative ends at the total.
    sv = data["savings"]
    assert sv["bucket_s"] == 3600
    assert sum(p["calls"] for p in sv["series"]) == 60
    assert sv["series"][-1]["cumulative_usd"] == pytest.approx(saved)
    cum = [p["cumulative_usd"] for p in sv["series"]]
    assert cum == sorted(cum) and all(p["t"] % 3600 == 0 for p in sv["series"])

    fr = data["fallback_reasons"]
    assert fr["total"] == 6
    kinds = {r["kind"]: r["count"] for r in fr["by_kind"]}
    assert kinds == {"schema": 4, "engine_error": 1, XSS_REASON.split(":")[0]: 1}
    assert fr["top"][0] == {"reason": FALLBACK_REASONS[0], "count": 4}


def test_report_data_quality_frontier_gate_route_shadow(store):
    seeded = seed(store)
    data = collect_report(store)
    rep = seeded["reports"]["v2"]
    (q,) = data["quality"]  # the newest evaluation per task
    assert q["id"] == rep.id and q["primary_metric"] == rep.primary_metric
    systems = {s["system"]: s for s in q["systems"]}
    assert list(systems) == ["student", "base_zero_shot", "base_few_shot", "teacher"]
    for name, s in systems.items():
        iv = rep.metric(name)
        assert s["value"] == pytest.approx(iv.value)
        assert s["low"] == pytest.approx(iv.low, abs=1e-5) and s["high"] == pytest.approx(iv.high, abs=1e-5)
        assert s["low"] <= s["value"] <= s["high"]
    assert (
        systems["student"]["value"] > systems["base_few_shot"]["value"] > systems["base_zero_shot"]["value"]
    )
    assert q["share_of_teacher"]["value"] == pytest.approx(rep.share_of_teacher.value, abs=1e-5)

    # Frontier: both adapters of the task, the baselines and the teacher, each with a cost.
    points = [p for p in data["frontier"] if p["task_id"] == "triage"]
    students = {p["name"] for p in points if p["system"] == "student"}
    assert students == {"triage:v1", "triage:v2"}
    assert {p["system"] for p in points} == {"student", "base_zero_shot", "base_few_shot", "teacher"}
    assert all(p["cost_per_1k"] is not None and p["cost_per_1k"] >= 0 for p in points)
    teacher = next(p for p in points if p["system"] == "teacher")
    assert teacher["cost_per_1k"] == pytest.approx(1.0)  # triage's teacher traces cost $0.001 each

    (g,) = data["gate_decisions"]
    assert g["decision"] == seeded["decision"].decision and g["adapter_id"] == seeded["adapters"]["v2"].id
    assert {c["name"] for c in g["checks"]} >= {"share_of_teacher", "validity"}
    tasks = {t["task_id"]: t for t in data["tasks"]}
    assert tasks["triage"]["route"]["label"] == "canary:20"
    assert tasks["triage"]["gate"]["id"] == g["id"]
    assert [a["ref"] for a in data["adapters"]] == ["triage:v1", "triage:v2"]

    (sh,) = data["shadow"]
    assert sh["n"] == 21 and sh["compared"] == 20 and sh["agreed"] == 15
    assert sh["agreement"] == pytest.approx(0.75)
    assert sh["agreement_low"] < 0.75 < sh["agreement_high"]
    assert sh["valid_rate"] == pytest.approx(18 / 21)
    assert tasks["weather"]["shadow"]["agreement"] == pytest.approx(0.75)


def test_report_on_an_empty_store_says_no_data(store):
    data = collect_report(store)
    assert data["totals"]["calls"] == 0 and data["tasks"] == [] and data["frontier"] == []
    page = render_html(data)
    for heading in (
        "Summary",
        "Tasks",
        "Quality per task",
        "Cost / quality frontier",
        "Fallback reasons",
        "Savings over time",
        "Shadow agreement",
    ):
        assert f">{heading}</h2>" in page
    assert page.count('class="empty"') >= 7


def test_a_missing_stage_table_leaves_its_section_empty(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    seed(store, evaluations=False)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE evaluations")
        conn.exec_driver_sql("DROP TABLE shadow_results")
    data = collect_report(store)
    assert data["quality"] == [] and data["shadow"] == []
    assert data["totals"]["calls"] > 0 and data["sources"]["evaluations"]["available"] is False
    assert "Quality per task" in render_html(data)


# --------------------------------------------------------------------------- html


def test_html_is_self_contained_with_plots_and_escapes_everything(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    seed(store)
    with store.engine.begin() as conn:  # markup in a task name, too
        conn.exec_driver_sql("UPDATE traces SET task_id = '<b>evil</b>' WHERE task_id IS NULL")
    # A pass with a confidence floor: its coverage curve is drawn.
    from protege.evaluate.bootstrap import Interval
    from protege.evaluate.gate import Floor, GateDecision, GateThresholds, save_decision

    curve = [{"min_confidence": 1 - k / 10, "coverage": k / 10, "share": {"value": 1.0, "low": 1 - k / 40}}
             for k in range(1, 11)]
    floor = Floor(0.4, 60, 100, Interval(1.0, 0.96, 1.0), 1.0)
    save_decision(store, GateDecision("floored", None, None, "pass", [], GateThresholds(), floor=floor),
                  None, curve)
    page = render_html(collect_report(store))
    assert page.count('class="plot coverage"') == 1 and 'class="chosen"' in page
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<b>evil" not in page and "<img" not in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page and "&lt;img src=x" in page
    # Nothing is fetched: no external URL in any src/href.
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and ' src="' not in page and "url(" not in page
    for cls in ("quality", "frontier-plot", "traffic", "fallbacks", "savings", "shadow"):
        assert (
            f'class="plot hbars {cls}"' in page
            or f"plot scatter {cls}" in page
            or f"plot stacked {cls}" in page
            or f"plot line {cls}" in page
        ), cls
    assert page.count("<svg") >= 6
    assert page.count('class="errorbar"') >= 4 + 6  # quality CIs, frontier CIs


# --------------------------------------------------------------------------- cli


def test_cli_writes_html_and_json_and_prints_a_summary(tmp_path, monkeypatch):
    from protege.cli.main import cli

    url = f"sqlite:///{tmp_path / 'p.db'}"
    store = open_store(url)
    seed(store)
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    res = CliRunner().invoke(
        cli, ["report", "--db", url, "--out", str(out), "--json", str(js)], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    data = json.loads(js.read_text())
    assert data["totals"]["calls"] == collect_report(store)["totals"]["calls"]
    assert "weather" in res.output and "triage" in res.output and "canary:20" in res.output
    assert str(out) in res.output

    res = CliRunner().invoke(cli, ["report", "--db", url, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["totals"]["calls"] == data["totals"]["calls"]

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["report", "--db", url])
    assert res.exit_code == 0 and Path(tmp_path / "report.html").exists()


def test_cli_on_an_empty_store_and_bad_arguments(tmp_path):
    from protege.cli.main import cli

    url = f"sqlite:///{tmp_path / 'p.db'}"
    res = CliRunner().invoke(cli, ["report", "--db", url, "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "no traffic" in res.output.lower()
    res = CliRunner().invoke(cli, ["report", "--db", url, "--since", "yesterday"])
    assert res.exit_code == 2 and "not a duration" in res.output
    res = CliRunner().invoke(
        cli, ["report", "--db", url, "--out", str(tmp_path / "missing" / "dir" / "r.html")]
    )
    assert res.exit_code == 0 and (tmp_path / "missing" / "dir" / "r.html").exists()


# --------------------------------------------------------------------------- live ui


@pytest.fixture
def ui(db_url):
    """The UI mounted under /ui of a parent app, as the gateway mounts it."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from protege.report.ui import create_ui_app

    store = open_store(db_url)
    seeded = seed(store)
    app = Starlette(routes=[Mount("/ui", app=create_ui_app(store))])
    with TestClient(app) as client:
        yield client, store, seeded
    store.close()


def _trace_ids(text: str) -> list[str]:
    import re

    return re.findall(r'href="/ui/traces/([0-9A-Z]+)"', text)


def test_ui_report_page_links_under_its_mount_point(ui):
    client, store, _ = ui
    r = client.get("/ui/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none': no script at all
    assert ">Cost / quality frontier</h2>" in r.text and r.text.count("<svg") >= 6
    assert (
        'href="/ui/traces"' in r.text and 'href="/ui/traces?task_id=weather&amp;served_by=fallback"' in r.text
    )
    assert "<script" not in r.text
    assert client.get("/ui/api/report").json()["totals"]["calls"] == store.count_traces()
    recent = client.get("/ui/api/report", params={"since": "1s"}).json()
    assert recent["totals"]["calls"] == 0 and recent["quality"]  # evaluations are not traffic
    assert client.get("/ui/", params={"until": "soon"}).status_code == 400


def test_ui_trace_browser_filters_and_paginates_on_the_server(ui):
    client, store, seeded = ui
    r = client.get("/ui/traces", params={"served_by": "student", "per_page": 25})
    assert r.status_code == 200
    assert len(_trace_ids(r.text)) == 25 and "page 1 of 3 · 60 traces" in r.text
    last = client.get("/ui/traces", params={"served_by": "student", "per_page": 25, "page": 3})
    ids3 = _trace_ids(last.text)
    assert len(ids3) == 10 and not set(ids3) & set(_trace_ids(r.text))
    assert "← newer" in last.text and "older →" not in last.text

    api = client.get("/ui/api/traces", params={"served_by": "student", "task_id": "triage"}).json()
    assert api["total"] == 10 and {t["task_id"] for t in api["traces"]} == {"triage"}
    assert all(t["served_by"] == "student" for t in api["traces"]) and "request" not in api["traces"][0]
    # Newest first.
    times = [t["created_at"] for t in api["traces"]]
    assert times == sorted(times, reverse=True)

    errors = client.get("/ui/api/traces", params={"status": "error"}).json()
    assert [t["id"] for t in errors["traces"]] == [seeded["xss_id"]]

    # Time range: a duration, an ISO time (UTC) and epoch seconds agree with the store.
    start = seeded["start"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 10 * 3600))
    for since in (iso, str(start + 10 * 3600)):
        got = client.get("/ui/api/traces", params={"since": since, "until": str(start + 20 * 3600)}).json()
        assert got["total"] == store.count_traces(since=start + 10 * 3600, until=start + 20 * 3600) == 30
    assert client.get("/ui/api/traces", params={"since": "1s"}).json()["total"] == 0

    bad = client.get("/ui/traces", params={"since": "<b>yesterday</b>"})
    assert bad.status_code == 400 and "not a time" in bad.text and "<b>yesterday" not in bad.text
    assert client.get("/ui/api/traces", params={"per_page": "x"}).status_code == 400


def test_ui_trace_page_escapes_trace_content_and_pretty_prints_tool_calls(ui):
    client, store, seeded = ui
    r = client.get(f"/ui/traces/{seeded['xss_id']}")
    assert r.status_code == 200
    assert "<script" not in r.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in r.text  # content, error, arguments
    assert r.text.count("&lt;script&gt;") >= 3
    # Arguments pretty-printed, one key per line.
    assert "{\n  &quot;city&quot;: &quot;&lt;script&gt;" in r.text
    assert ">Error</h2>" in r.text and ">Request</h2>" in r.text and ">Response</h2>" in r.text

    fallback = client.get("/ui/api/traces", params={"served_by": "fallback"}).json()["traces"]
    with_markup = next(t for t in fallback if t["fallback_reason"] == XSS_REASON)
    page = client.get(f"/ui/traces/{with_markup['id']}").text
    assert ">Fallback reason</h2>" in page and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "<img" not in page

    shadow_page = client.get(f"/ui/traces/{seeded['shadowed'][1]}").text
    assert ">Shadow student</h2>" in shadow_page and "&lt;i&gt;shadow answer&lt;/i&gt;" in shadow_page
    full = client.get(f"/ui/api/traces/{seeded['xss_id']}").json()
    assert full["request"]["messages"][0]["content"] == XSS and full["error"] == XSS

    assert client.get("/ui/traces/NOPE").status_code == 404
    assert client.get("/ui/api/traces/NOPE").status_code == 404


def test_ui_on_an_encrypted_store_without_the_key_still_lists_traces(tmp_path):
    from starlette.testclient import TestClient

    from protege.report.ui import create_ui_app

    url = f"sqlite:///{tmp_path / 'p.db'}"
    with open_store(url, encryption_key="s3cret") as enc:
        seed(enc, evaluations=False)
    store = open_store(url)
    client = TestClient(create_ui_app(store))
    api = client.get("/api/traces", params={"per_page": 5}).json()
    assert api["total"] > 100 and len(api["traces"]) == 5
    page = client.get(f"/traces/{api['traces'][0]['id']}")
    assert page.status_code == 200 and "PROTEGE_ENCRYPTION_KEY" in page.text
    assert 'href="/traces/' in client.get("/traces").text  # at the root, links have no prefix
    assert client.get("/").status_code == 200


def test_task_labels_come_from_the_task_stage_table(tmp_path):
    import sqlalchemy as sa

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    seed(store, evaluations=False)
    if not sa.inspect(store.engine).has_table("tasks"):
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE tasks (id TEXT PRIMARY KEY, label TEXT, output_type TEXT)")
    table = sa.Table("tasks", sa.MetaData(), autoload_with=store.engine)
    key = "task_id" if "task_id" in table.c else "id"
    label = next(c for c in ("label", "name", "title") if c in table.c)
    row: dict[str, Any] = {}
    for col in table.c:  # whatever else the stage requires, filled with plain values
        if not col.nullable and col.default is None and col.server_default is None:
            row[col.name] = 0 if isinstance(col.type, sa.Integer | sa.Float | sa.Numeric) else "x"
    row.update({key: "weather", label: "<em>weather lookups</em>"})
    if "output_type" in table.c:
        row["output_type"] = "tool_call"
    with store.engine.begin() as conn:
        conn.execute(table.insert().values(**row))
    data = collect_report(store)
    weather = next(t for t in data["tasks"] if t["task_id"] == "weather")
    assert weather["label"] == "<em>weather lookups</em>"
    page = render_html(data)
    assert "&lt;em&gt;weather lookups&lt;/em&gt;" in page and "<em>" not in page
