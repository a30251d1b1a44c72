"""The report as one self-contained HTML page: inline CSS and SVG, no script,
nothing fetched. Every value from the store is escaped (trace content, task
names and fallback reasons are untrusted text). Its length is the page's: one
function per section, sharing only the formatting helpers at the top."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from protege.report.svg import (
    PALETTE,
    Bar,
    Point,
    Stack,
    coverage_curve,
    esc,
    fmt_num,
    hbars,
    line,
    scatter,
    stacked_hbars,
)

SERVED_COLORS = {"teacher": "#4263eb", "student": "#2f9e44", "fallback": "#f08c00"}
SYSTEM_COLORS = {
    "student": "#2f9e44",
    "base_zero_shot": "#adb5bd",
    "base_few_shot": "#868e96",
    "teacher": "#4263eb",
}
# Several adapters of one task on the frontier: one colour each.
STUDENT_COLORS = ("#2f9e44", "#0c8599", "#5c940d", "#ae3ec9")
SYSTEM_NAMES = {
    "student": "student",
    "base_zero_shot": "base zero-shot",
    "base_few_shot": "base few-shot",
    "teacher": "teacher",
}

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #212529;
  background: #f8f9fa; }
header { background: #212529; color: #f8f9fa; padding: 14px 28px; display: flex; gap: 24px;
  align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 20px; margin: 0; }
header .meta { color: #adb5bd; font-size: 12px; }
header nav a { color: #dee2e6; margin-right: 14px; text-decoration: none; }
header nav a:hover { text-decoration: underline; }
main { padding: 12px 20px 40px; max-width: 1600px; }
section { background: #fff; border: 1px solid #dee2e6; border-radius: 6px; padding: 14px 18px;
  margin: 16px 0; }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 12px 0 6px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid #dee2e6; border-radius: 6px; padding: 10px 16px;
  min-width: 150px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: #868e96; font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e9ecef; vertical-align: top; }
th { background: #f1f3f5; font-weight: 600; }
.scroll { overflow-x: auto; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.empty { color: #868e96; font-style: italic; }
.grid { display: flex; flex-wrap: wrap; gap: 18px; }
.grid > div { flex: 0 1 auto; }
.pass { color: #2b8a3e; font-weight: 600; }
.fail { color: #c92a2a; font-weight: 600; }
.muted { color: #868e96; }
.mini { display: inline-block; width: 120px; height: 10px; background: #f1f3f5; vertical-align: middle;
  border-radius: 2px; overflow: hidden; }
.mini span { display: inline-block; height: 10px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
pre { background: #f8f9fa; border: 1px solid #e9ecef; border-radius: 4px; padding: 8px;
  white-space: pre-wrap; word-break: break-word; margin: 4px 0; }
a { color: #1c7ed6; }
form.filters { display: flex; gap: 10px; flex-wrap: wrap; align-items: end; margin-bottom: 10px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #495057; }
form.filters input, form.filters select { font: inherit; padding: 3px 6px; }
.pager { margin-top: 10px; display: flex; gap: 14px; align-items: center; }
.msg { border-left: 3px solid #dee2e6; padding: 2px 10px; margin: 8px 0; }
.msg .role { font-weight: 600; font-size: 12px; color: #495057; text-transform: uppercase; }
.msg.system { border-color: #adb5bd; } .msg.user { border-color: #4263eb; }
.msg.assistant { border-color: #2f9e44; } .msg.tool { border-color: #ae3ec9; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; color: #fff; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.kv dt { color: #868e96; } dl.kv dd { margin: 0; }
.error { color: #c92a2a; }
"""


# --------------------------------------------------------------------------- formatting


def pct(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x * 100:.{digits}f}%"


def usd(x: float | None) -> str:
    if x is None:
        return "–"
    if x == 0:
        return "$0"
    if abs(x) >= 100:
        return f"${x:,.0f}"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    if abs(x) >= 0.01:
        text = f"{x:.3f}"
        return "$" + (text[:-1] if text.endswith("0") else text)
    return f"${x:.2g}"


def num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def when(ts: float | None) -> str:
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def interval(v: float | None, lo: float | None, hi: float | None) -> str:
    if v is None:
        return "–"
    if lo is None or hi is None:
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def badge(who: str) -> str:
    color = SERVED_COLORS.get(who, "#868e96")
    return f'<span class="badge" style="background:{color}">{esc(who)}</span>'


def mini_served(served: dict[str, int]) -> str:
    total = sum(served.values())
    if not total:
        return '<span class="muted">–</span>'
    parts = "".join(
        f'<span style="width:{served.get(k, 0) / total * 100:.1f}%;background:{c}" '
        f'title="{esc(k)}: {served.get(k, 0)}"></span>'
        for k, c in SERVED_COLORS.items()
    )
    return f'<span class="mini">{parts}</span>'


def empty(text: str = "No data yet.") -> str:
    return f'<p class="empty">{esc(text)}</p>'


class Links:
    """Where the page links to: nowhere in a static file, the trace browser live."""

    def __init__(self, base: str | None) -> None:
        self.base = base

    @property
    def live(self) -> bool:
        return self.base is not None

    def traces(self, **params: Any) -> str | None:
        if self.base is None:
            return None
        q = urlencode({k: v for k, v in params.items() if v is not None})
        return f"{self.base}/traces" + (f"?{q}" if q else "")

    def a(self, text: str, href: str | None) -> str:
        return f'<a href="{esc(href)}">{esc(text)}</a>' if href else esc(text)


def task_name(t: dict[str, Any]) -> str:
    return t["task_id"] + (f" — {t['label']}" if t.get("label") else "")


# --------------------------------------------------------------------------- sections


def _summary(data: dict[str, Any]) -> str:
    tot = data["totals"]
    cards = [
        ("calls", f"{tot['calls']:,}"),
        ("served by students", pct(tot["student_share"], 1)),
        ("tasks", str(tot["tasks"])),
        ("spent", usd(tot["cost_usd"])),
        ("saved", usd(tot["saved_usd"])),
        ("teacher-only cost", usd(tot["teacher_only_cost_usd"])),
        ("errors", f"{tot['errors']:,}"),
    ]
    body = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in cards
    )
    span = ""
    if tot.get("first_call_at") is not None:
        span = f'<p class="muted">Calls from {esc(when(tot["first_call_at"]))} to {esc(when(tot["last_call_at"]))}.</p>'
    return f'<section id="summary"><h2>Summary</h2><div class="cards">{body}</div>{span}</section>'


def _tasks(data: dict[str, Any], links: Links) -> str:
    tasks = data["tasks"]
    if not tasks:
        return f'<section id="tasks"><h2>Tasks</h2>{empty("No traffic captured yet.")}</section>'
    rows = []
    for t in tasks:
        q = t.get("quality") or {}
        share = q.get("share_of_teacher") or {}
        gate = t.get("gate")
        gate_html = "–"
        if gate:
            cls = "pass" if gate["decision"] == "pass" else "fail"
            failed = [c["name"] for c in gate.get("checks", []) if not c.get("ok")]
            gate_html = f'<span class="{cls}">{esc(gate["decision"])}</span>' + (
                f' <span class="muted">({esc(", ".join(failed))})</span>' if failed else ""
            )
        sh = t.get("shadow")
        route = t.get("route") or {}
        task_id = None if t["task_id"] == "(unassigned)" else t["task_id"]
        rows.append(
            "<tr>"
            f"<td>{links.a(t['task_id'], links.traces(task_id=task_id) if task_id else None)}"
            f"{'<br><span class=muted>' + esc(t['label']) + '</span>' if t.get('label') else ''}"
            f"{'<br><span class=muted>' + esc(t['output_type']) + '</span>' if t.get('output_type') else ''}</td>"
            f'<td class="n">{t["calls"]:,}<br><span class=muted>{pct(t["traffic_share"], 1)}</span></td>'
            f'<td class="n">{usd(t["cost_usd"])}<br><span class=muted>{pct(t["cost_share"], 1)}</span></td>'
            f"<td>{mini_served(t['served'])} <span class=muted>{pct(t['student_share'])} student</span></td>"
            f"<td>{esc(route.get('label') or '–')}"
            f"{'<br><span class=muted>' + esc(t['promoted_adapter']) + '</span>' if t.get('promoted_adapter') else ''}</td>"
            f'<td class="n">{esc(interval(q.get("student"), None, None))}'
            f"{'<br><span class=muted>' + esc(q.get('primary_metric')) + '</span>' if q else ''}</td>"
            f'<td class="n">{esc(interval(share.get("value"), share.get("low"), share.get("high")))}</td>'
            f"<td>{gate_html}</td>"
            f'<td class="n">{pct(sh.get("agreement")) if sh else "–"}'
            f"{'<br><span class=muted>' + str(sh['compared']) + ' compared</span>' if sh else ''}</td>"
            f'<td class="n">{usd(t["saved_usd"])}</td>'
            "</tr>"
        )
    head = (
        "<tr><th>task</th><th class=n>calls (share)</th><th class=n>cost (share)</th><th>served by</th><th>route</th><th class=n>quality</th>"
        "<th class=n>share of teacher [95% CI]</th><th>gate</th><th class=n>shadow agree</th>"
        "<th class=n>saved</th></tr>"
    )
    return f'<section id="tasks"><h2>Tasks</h2><div class="scroll"><table>{head}{"".join(rows)}</table></div></section>'


def _quality(data: dict[str, Any]) -> str:
    evals = data["quality"]
    if not evals:
        return (
            '<section id="quality"><h2>Quality per task</h2>'
            f"{empty('No evaluation yet: run protege eval TASK.')}</section>"
        )
    blocks = []
    for e in evals:
        bars = [
            Bar(
                SYSTEM_NAMES.get(s["system"], s["system"]),
                s["value"],
                s["low"],
                s["high"],
                SYSTEM_COLORS.get(s["system"], PALETTE[-1]),
            )
            for s in e["systems"]
        ]
        basis = (
            "against ground truth" if e.get("basis") == "ground_truth" else "against the teacher's answers"
        )
        share = e.get("share_of_teacher") or {}
        chart = (
            hbars(
                bars,
                title=f"{e['task_id']}: {e['primary_metric']} with 95% CI",
                xmax=max([1.0] + [b.high or b.value for b in bars]),
                value_fmt=lambda v: f"{v:.3f}".rstrip("0").rstrip(".") if v else "0",
                cls="hbars quality",
            )
            if bars
            else empty("No system scored.")
        )
        blocks.append(
            f"<div><h3>{esc(e['task_id'])}</h3>"
            f'<p class="muted">{esc(e["primary_metric"])} {esc(basis)}, n = {esc(e.get("n_examples"))}; '
            f"adapter {esc(e.get('adapter_ref') or e.get('adapter_id') or '–')}; {esc(when(e.get('created_at')))}<br>"
            f"share of teacher: {esc(interval(share.get('value'), share.get('low'), share.get('high')))}</p>"
            f"{chart}</div>"
        )
    return (
        f'<section id="quality"><h2>Quality per task</h2><div class="grid">{"".join(blocks)}</div></section>'
    )


def _frontier(data: dict[str, Any]) -> str:
    points = data["frontier"]
    if not points:
        return (
            '<section id="frontier"><h2>Cost / quality frontier</h2>'
            f"{empty('No evaluation with costs yet.')}</section>"
        )
    by_task: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        by_task.setdefault(p["task_id"], []).append(p)
    blocks = []
    for task, pts in by_task.items():
        student_colors: dict[str, str] = {}
        plot_points = []
        for p in pts:
            if p["system"] == "student":
                color = student_colors.setdefault(
                    p["name"], STUDENT_COLORS[len(student_colors) % len(STUDENT_COLORS)]
                )
            else:
                color = SYSTEM_COLORS.get(p["system"], PALETTE[-1])
            plot_points.append(
                Point(
                    SYSTEM_NAMES.get(p["system"], p["name"]) if p["system"] != "student" else p["name"],
                    p["cost_per_1k"],
                    p["quality"],
                    p["low"],
                    p["high"],
                    color,
                )
            )
        chart = scatter(
            plot_points,
            title=f"{task}: cost per 1k calls vs {pts[0]['metric']}",
            xlabel="USD per 1,000 calls",
            ylabel=pts[0]["metric"],
            cls="scatter frontier-plot",
        )
        table = "".join(
            f'<tr><td><span style="color:{pp.color}">●</span> {esc(pp.label)}</td>'
            f"<td class=n>{esc(usd(pp.x))}</td><td class=n>{esc(interval(pp.y, pp.low, pp.high))}</td></tr>"
            for pp in sorted(plot_points, key=lambda pp: pp.x)
        )
        blocks.append(
            f"<div><h3>{esc(task)}</h3>{chart}<table><tr><th>model</th><th class=n>per 1k calls</th>"
            f"<th class=n>{esc(pts[0]['metric'])} [95% CI]</th></tr>{table}</table></div>"
        )
    note = (
        '<p class="muted">Each point is a model on the task\'s test split (error bars: 95% CI); '
        "the dashed line joins the points nothing beats on both cost and quality.</p>"
    )
    return f'<section id="frontier"><h2>Cost / quality frontier</h2>{note}<div class="grid">{"".join(blocks)}</div></section>'


def _traffic(data: dict[str, Any], links: Links) -> str:
    tasks = [t for t in data["tasks"] if t["calls"]]
    if not tasks:
        return f'<section id="traffic"><h2>Traffic and who served it</h2>{empty()}</section>'
    stacks = [Stack(t["task_id"], [(k, float(t["served"][k])) for k in SERVED_COLORS]) for t in tasks]
    chart = stacked_hbars(
        stacks, title="calls per task by who served them", colors=SERVED_COLORS, cls="stacked traffic"
    )
    shares = "".join(
        f"<tr><td>{esc(t['task_id'])}</td><td class=n>{pct(t['traffic_share'], 1)}</td>"
        + "".join(
            f"<td class=n>{links.a(str(t['served'][k]), links.traces(task_id=t['task_id'] if t['task_id'] != '(unassigned)' else None, served_by=k))}</td>"
            for k in SERVED_COLORS
        )
        + f"<td class=n>{num(t['latency_ms'].get('teacher'), 0)}</td><td class=n>{num(t['latency_ms'].get('student'), 0)}</td></tr>"
        for t in tasks
    )
    table = (
        "<table><tr><th>task</th><th class=n>traffic share</th><th class=n>teacher</th><th class=n>student</th>"
        "<th class=n>fallback</th><th class=n>teacher ms</th><th class=n>student ms</th></tr>"
        f"{shares}</table>"
    )
    return f'<section id="traffic"><h2>Traffic and who served it</h2>{chart}{table}</section>'


def _fallbacks(data: dict[str, Any], links: Links) -> str:
    fr = data["fallback_reasons"]
    if not fr["total"]:
        return f'<section id="fallbacks"><h2>Fallback reasons</h2>{empty("No fallback yet.")}</section>'
    bars = [Bar(r["kind"], float(r["count"]), color="#f08c00") for r in fr["by_kind"]]
    chart = hbars(bars, title="fallbacks to the teacher by reason", cls="hbars fallbacks", label_width=180)
    top = "".join(
        f"<tr><td><code>{esc(r['reason'])}</code></td><td class=n>{r['count']:,}</td></tr>" for r in fr["top"]
    )
    more = links.a("browse fallback traces", links.traces(served_by="fallback")) if links.live else ""
    return (
        f'<section id="fallbacks"><h2>Fallback reasons</h2>{chart}'
        f"<h3>Most frequent reasons</h3><table><tr><th>reason</th><th class=n>count</th></tr>{top}</table>"
        f"<p>{more}</p></section>"
    )


def _savings(data: dict[str, Any]) -> str:
    sv = data["savings"]
    series = sv["series"]
    tot = data["totals"]
    if not series:
        return (
            '<section id="savings"><h2>Savings over time</h2>'
            f"{empty('No call served by a student yet.')}</section>"
        )
    chart = line(
        [(p["t"], p["cumulative_usd"]) for p in series],
        title="cumulative USD saved",
        ylabel="USD saved (cumulative)",
        step_s=sv["bucket_s"],
        value_fmt=lambda v: usd(v),
        cls="line savings",
    )
    unit = "hour" if sv["bucket_s"] < 86400 else "day"
    note = (
        f'<p class="muted">Per {unit}: calls served by a student × the teacher\'s average cost on that task − '
        f"what the student call cost. Total saved {esc(usd(tot['saved_usd']))} of a teacher-only cost of "
        f"{esc(usd(tot['teacher_only_cost_usd']))}"
        + (
            f"; {tot['unpriced_student_calls']} student calls had no teacher price"
            if tot["unpriced_student_calls"]
            else ""
        )
        + ".</p>"
    )
    return f'<section id="savings"><h2>Savings over time</h2>{chart}{note}</section>'


def _shadow(data: dict[str, Any]) -> str:
    rows = data["shadow"]
    if not rows:
        return f'<section id="shadow"><h2>Shadow agreement</h2>{empty("No shadow comparison yet.")}</section>'
    bars = [
        Bar(
            f"{r['task_id']} · {r['adapter'] or '?'}",
            r["agreement"] or 0.0,
            r["agreement_low"],
            r["agreement_high"],
            "#0c8599",
            note=f"{r['agreed']}/{r['compared']} agreed",
        )
        for r in rows
        if r["compared"]
    ]
    chart = (
        hbars(
            bars,
            title="student agrees with the teacher (95% Wilson CI)",
            xmax=1.0,
            cls="hbars shadow",
            value_fmt=lambda v: f"{v:.0%}",
            label_width=200,
        )
        if bars
        else ""
    )
    table = "".join(
        f"<tr><td>{esc(r['task_id'])}</td><td>{esc(r['adapter'] or '–')}</td><td class=n>{r['n']:,}</td>"
        f"<td class=n>{r['compared']:,}</td><td class=n>{pct(r['agreement'], 1)}</td>"
        f"<td class=n>{pct(r['valid_rate'], 1)}</td><td class=n>{num(r['latency_ms'], 0)}</td></tr>"
        for r in rows
    )
    return (
        f'<section id="shadow"><h2>Shadow agreement</h2>{chart}'
        "<table><tr><th>task</th><th>adapter</th><th class=n>shadowed</th><th class=n>compared</th>"
        "<th class=n>agreement</th><th class=n>valid</th><th class=n>student ms</th></tr>"
        f"{table}</table></section>"
    )


def _gates_and_adapters(data: dict[str, Any]) -> str:
    gates = data["gate_decisions"]
    if gates:
        rows = []
        for g in gates:
            cls = "pass" if g["decision"] == "pass" else "fail"
            checks = "<br>".join(
                f'<span class="{"pass" if c.get("ok") else "fail"}">{"✓" if c.get("ok") else "✗"}</span> '
                f"{esc(c.get('message') or c.get('name'))}"
                for c in g["checks"]
            )
            rows.append(
                f"<tr><td>{esc(g['task_id'])}</td><td>{esc(g.get('adapter_ref') or g.get('adapter_id') or '–')}</td>"
                f'<td class="{cls}">{esc(g["decision"])}</td><td>{esc(g.get("status") or "–")}</td>'
                f"<td>{checks}</td><td>{esc(when(g.get('created_at')))}</td></tr>"
            )
        gate_html = (
            "<table><tr><th>task</th><th>adapter</th><th>decision</th><th>status set</th><th>checks</th>"
            f"<th>when</th></tr>{''.join(rows)}</table>"
        )
        plots = []
        for g in gates:
            if not g.get("floor_curve"):
                continue
            fl = g.get("floor") or {}
            plots.append(coverage_curve(
                g["floor_curve"],
                title=f"{g['task_id']}: answers served against quality, by confidence floor",
                min_share=float((g.get("thresholds") or {}).get("min_share") or 0.95),
                chosen=fl.get("coverage"),
            ))
        if plots:
            gate_html += (
                "<p>Confidence floors: each point serves the test answers the student was surest of; the gate "
                "keeps the lowest floor whose lower bound stays over its bar (dashed red).</p>" + "".join(plots)
            )
    else:
        gate_html = empty("No gate decision yet: run protege gate TASK --adapter V.")
    adapters = data["adapters"]
    if adapters:
        rows = "".join(
            f"<tr><td>{esc(a['ref'])}</td><td><code>{esc(a['id'])}</code></td><td>{esc(a['base_model'])}</td>"
            f"<td>{esc(a['status'])}</td><td>{esc(a.get('status_reason') or '')}</td>"
            f"<td>{esc(when(a.get('updated_at')))}</td></tr>"
            for a in adapters
        )
        ad_html = (
            "<table><tr><th>adapter</th><th>id</th><th>base model</th><th>status</th><th>reason</th>"
            f"<th>updated</th></tr>{rows}</table>"
        )
    else:
        ad_html = empty("No adapter trained yet.")
    return (
        f'<section id="gates"><h2>Release gate decisions</h2>{gate_html}</section>'
        f'<section id="adapters"><h2>Adapters</h2>{ad_html}</section>'
    )


NAV = (
    ("summary", "Summary"),
    ("tasks", "Tasks"),
    ("quality", "Quality"),
    ("frontier", "Frontier"),
    ("traffic", "Traffic"),
    ("fallbacks", "Fallbacks"),
    ("savings", "Savings"),
    ("shadow", "Shadow"),
    ("gates", "Gate"),
)


def page(title: str, body: str, *, nav: str = "", meta: str = "") -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No favicon request: the page must not fetch anything.
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><nav>{nav}</nav><span class=meta>{meta}</span></header>"
        f"<main>{body}</main></body></html>\n"
    )


def render_html(data: dict[str, Any], *, base: str | None = None) -> str:
    """The whole report page. ``base`` is the URL prefix of the live UI (links to
    the trace browser); ``None`` renders the static, link-free file."""
    links = Links(base)
    nav = "".join(f'<a href="#{k}">{esc(v)}</a>' for k, v in NAV)
    if links.live:
        nav += f'<a href="{esc(base)}/traces">Traces</a><a href="{esc(base)}/api/report">JSON</a>'
    meta = f"generated {esc(when(data.get('generated_at')))}"
    if data.get("store"):
        meta += f" · {esc(data['store'])}"
    body = "".join(
        [
            _summary(data),
            _tasks(data, links),
            _quality(data),
            _frontier(data),
            _traffic(data, links),
            _fallbacks(data, links),
            _savings(data),
            _shadow(data),
            _gates_and_adapters(data),
        ]
    )
    return page("protege report", body, nav=nav, meta=meta)


__all__ = ["fmt_num", "page", "render_html"]
