"""The trace browser's HTML: the filtered list of traces and one trace's
page (messages, tool calls, error, shadow result, feedback). Trace content is
untrusted: every value is escaped here."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote, urlencode

from protege.report.html import SERVED_COLORS, badge, empty, page, usd, when
from protege.report.svg import esc


def nav(root: str) -> str:
    return f'<a href="{esc(root)}/">Report</a><a href="{esc(root)}/traces">Traces</a>'


def _select(name: str, value: str | None, options: list[str]) -> str:
    opts = ['<option value="">any</option>'] + [
        f'<option value="{esc(o)}"{" selected" if o == value else ""}>{esc(o)}</option>' for o in options
    ]
    if value and value not in options:
        opts.append(f'<option value="{esc(value)}" selected>{esc(value)}</option>')
    return f'<label>{esc(name.replace("_", " "))}<select name="{esc(name)}">{"".join(opts)}</select></label>'


def _filter_form(root: str, raw: dict[str, Any], tasks: list[str], per_page: int) -> str:
    return (
        f'<form class="filters" method="get" action="{esc(root)}/traces">'
        + _select("task_id", raw.get("task_id"), tasks)
        + _select("served_by", raw.get("served_by"), list(SERVED_COLORS))
        + _select("status", raw.get("status"), ["ok", "error"])
        + f'<label>since<input name="since" value="{esc(raw.get("since") or "")}" placeholder="24h or 2026-01-31T12:00" size="18"></label>'
        + f'<label>until<input name="until" value="{esc(raw.get("until") or "")}" placeholder="UTC" size="18"></label>'
        + f'<input type="hidden" name="per_page" value="{per_page}">'
        + '<button type="submit">Filter</button>'
        + f'<a href="{esc(root)}/traces">reset</a></form>'
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _short(text: Any, n: int = 60) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def render_trace_list(
    root: str,
    rows: list[dict[str, Any]],
    total: int,
    q: dict[str, Any],
    tasks: list[str],
    error: str | None = None,
) -> str:
    raw, page_no, per_page = q["raw"], q["page"], q["per_page"]
    pages = max(1, math.ceil(total / per_page))
    form = _filter_form(root, raw, tasks, per_page)
    if error:
        body = f'<section><h2>Traces</h2>{form}<p class="error">{esc(error)}</p></section>'
        return page("protege traces", body, nav=nav(root))
    if rows:
        trs = []
        for r in rows:
            href = f"{root}/traces/{quote(str(r['id']), safe='')}"
            status = (
                esc(r["status"]) if r["status"] == "ok" else f'<span class="error">{esc(r["status"])}</span>'
            )
            trs.append(
                f"<tr><td class=n>{esc(when(r['created_at']))}</td>"
                f'<td><a href="{esc(href)}"><code>{esc(r["id"])}</code></a></td>'
                f"<td>{esc(r.get('task_id') or '–')}</td><td>{badge(str(r['served_by']))}</td><td>{status}</td>"
                f"<td>{esc(r.get('upstream_model') or r.get('model') or '–')}</td>"
                f"<td class=n>{_ms(r.get('latency_ms'))}</td>"
                f"<td class=n>{esc(usd(r.get('cost_usd')))}</td>"
                f"<td>{esc(', '.join(r.get('tools_called') or []) or '–')}</td>"
                f"<td>{esc(_short(r.get('fallback_reason') or r.get('error') or ''))}</td></tr>"
            )
        table = (
            '<div class="scroll"><table><tr><th>time</th><th>id</th><th>task</th><th>served by</th><th>status</th>'
            "<th>model</th><th class=n>latency</th><th class=n>cost</th><th>tools called</th>"
            f"<th>fallback / error</th></tr>{''.join(trs)}</table></div>"
        )
    else:
        table = empty("No trace matches these filters.")
    params = {k: v for k, v in raw.items() if v}
    params["per_page"] = per_page

    def link(p: int, text: str) -> str:
        return f'<a href="{esc(root)}/traces?{esc(urlencode({**params, "page": p}))}">{esc(text)}</a>'

    pager = (
        '<div class="pager">'
        + (link(page_no - 1, "← newer") if page_no > 1 else "")
        + f"<span>page {page_no} of {pages} · {total:,} traces</span>"
        + (link(page_no + 1, "older →") if page_no < pages else "")
        + f'<a href="{esc(root)}/api/traces?{esc(urlencode({**params, "page": page_no}))}">JSON</a></div>'
    )
    body = f"<section><h2>Traces</h2>{form}{table}{pager}</section>"
    return page("protege traces", body, nav=nav(root))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _args_html(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            return f"<pre>{esc(_pretty(json.loads(arguments)))}</pre>"
        except ValueError:
            return f'<p class="error">arguments are not valid JSON:</p><pre>{esc(arguments)}</pre>'
    return f"<pre>{esc(_pretty(arguments))}</pre>"


def _tool_calls_html(calls: Any) -> str:
    if not calls:
        return ""
    out = []
    for tc in calls if isinstance(calls, list) else [calls]:
        fn = (tc or {}).get("function") or {}
        out.append(
            f'<div class="toolcall"><b>→ {esc(fn.get("name") or "?")}</b> '
            f'<span class="muted">{esc((tc or {}).get("id") or "")}</span>{_args_html(fn.get("arguments"))}</div>'
        )
    return "".join(out)


def _content_html(content: Any) -> str:
    if content is None or content == "":
        return ""
    if isinstance(content, str):
        return f"<pre>{esc(content)}</pre>"
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(f"<pre>{esc(part.get('text'))}</pre>")
            elif isinstance(part, dict):
                parts.append(f'<p class="muted">[{esc(part.get("type") or "part")}]</p>')
            else:
                parts.append(f"<pre>{esc(part)}</pre>")
        return "".join(parts)
    return f"<pre>{esc(_pretty(content))}</pre>"


def _message_html(msg: Any) -> str:
    if not isinstance(msg, dict):
        return f"<pre>{esc(_pretty(msg))}</pre>"
    role = str(msg.get("role") or "?")
    extra = ""
    if msg.get("tool_call_id"):
        extra = f' <span class="muted">for {esc(msg["tool_call_id"])}</span>'
    if msg.get("name"):
        extra += f' <span class="muted">{esc(msg["name"])}</span>'
    body = _content_html(msg.get("content")) + _tool_calls_html(msg.get("tool_calls"))
    fc = msg.get("function_call")
    if isinstance(fc, dict):
        body += _tool_calls_html([{"function": fc}])
    if msg.get("refusal"):
        body += f'<p class="error">refusal: {esc(msg["refusal"])}</p>'
    return f'<div class="msg {esc(role)}"><div class="role">{esc(role)}{extra}</div>{body or empty("(empty)")}</div>'


def _kv(items: list[tuple[str, Any]]) -> str:
    return (
        '<dl class="kv">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items if v not in (None, "", "–"))
        + "</dl>"
    )


def render_trace(
    root: str, cols: dict[str, Any], trace: Any | None, extra: dict[str, Any], note: str = ""
) -> str:
    c = cols
    who = str(c.get("served_by") or "?")
    facts = [
        ("id", f"<code>{esc(c['id'])}</code>"),
        ("time", esc(when(c.get("created_at")))),
        ("task", esc(c.get("task_id") or "–")),
        ("task tag", esc(c.get("task_tag"))),
        ("served by", badge(who) + (f" {esc(c['adapter'])}" if c.get("adapter") else "")),
        (
            "status",
            esc(c.get("status")) + (f" (HTTP {esc(c['http_status'])})" if c.get("http_status") else ""),
        ),
        ("model", esc(c.get("model"))),
        ("teacher's model", esc(c.get("upstream_model"))),
        ("source", esc(c.get("source"))),
        ("client", esc(c.get("client_id"))),
        ("session", esc(c.get("session_id"))),
        ("latency", "" if c.get("latency_ms") is None else f"{c['latency_ms']:.0f} ms"),
        ("first token", "" if c.get("ttft_ms") is None else f"{c['ttft_ms']:.0f} ms"),
        (
            "tokens",
            ""
            if c.get("prompt_tokens") is None and c.get("completion_tokens") is None
            else f"{c.get('prompt_tokens') or 0} in / {c.get('completion_tokens') or 0} out",
        ),
        ("cost", esc(usd(c.get("cost_usd")))),
        ("finish reason", esc(c.get("finish_reason"))),
        ("stream", "yes" if c.get("stream") else ""),
    ]
    sections = [f"<section><h2>Trace</h2>{_kv(facts)}</section>"]
    if c.get("fallback_reason"):
        sections.append(
            f'<section id="fallback"><h2>Fallback reason</h2><pre class="error">{esc(c["fallback_reason"])}</pre></section>'
        )
    if c.get("error"):
        sections.append(
            f'<section id="error"><h2>Error</h2><pre class="error">{esc(c["error"])}</pre></section>'
        )
    if note:
        sections.append(f'<section><p class="error">{esc(note)}</p></section>')
    if trace is not None:
        req = trace.request if isinstance(trace.request, dict) else {}
        msgs = "".join(_message_html(m) for m in req.get("messages") or []) or empty("(no messages)")
        params = {k: v for k, v in req.items() if k not in ("messages", "tools")}
        tools = req.get("tools") or []
        tools_html = ""
        if tools:
            names = [((t or {}).get("function") or {}).get("name") or "?" for t in tools]
            tools_html = (
                f"<h3>Tools offered ({len(tools)})</h3><p>{esc(', '.join(names))}</p>"
                f"<details><summary>schemas</summary><pre>{esc(_pretty(tools))}</pre></details>"
            )
        sections.append(
            f'<section id="request"><h2>Request</h2>{msgs}{tools_html}'
            f"<h3>Parameters</h3><pre>{esc(_pretty(params))}</pre></section>"
        )
        resp = trace.response if isinstance(trace.response, dict) else None
        if resp:
            choices = resp.get("choices") or []
            answer = "".join(_message_html((ch or {}).get("message")) for ch in choices) or empty(
                "(no choices)"
            )
            sections.append(
                f'<section id="response"><h2>Response</h2>{answer}'
                f"<p class=muted>usage: {esc(json.dumps(resp.get('usage')))}</p>"
                f"<details><summary>raw response</summary><pre>{esc(_pretty(resp))}</pre></details></section>"
            )
        else:
            sections.append(
                f'<section id="response"><h2>Response</h2>{empty("No response stored.")}</section>'
            )
        if trace.meta:
            sections.append(f"<section><h2>Meta</h2><pre>{esc(_pretty(trace.meta))}</pre></section>")
    sh = extra.get("shadow")
    if sh:
        agree = {None: "not compared", 1: "agreed", 0: "disagreed"}.get(sh.get("agree"), str(sh.get("agree")))
        student = sh.get("student_response")
        body = _kv(
            [
                ("adapter", esc(sh.get("adapter"))),
                ("agreement", esc(agree)),
                ("valid", "yes" if sh.get("valid") else '<span class="error">no</span>'),
                (
                    "reasons",
                    esc(
                        ", ".join(sh.get("reasons") or [])
                        if isinstance(sh.get("reasons"), list)
                        else sh.get("reasons")
                    ),
                ),
                ("latency", "" if sh.get("latency_ms") is None else f"{sh['latency_ms']:.0f} ms"),
            ]
        )
        if student is not None:
            body += _message_html(student)
        sections.append(f'<section id="shadow"><h2>Shadow student</h2>{body}</section>')
    fbs = extra.get("feedback") or []
    if fbs:
        rows = "".join(
            f"<tr><td>{esc(when(f.created_at))}</td><td>{esc(f.score)}</td><td>{esc(f.label)}</td><td>{esc(f.comment)}</td></tr>"
            for f in fbs
        )
        sections.append(
            f'<section id="feedback"><h2>Feedback</h2><table><tr><th>when</th><th>score</th><th>label</th>'
            f"<th>comment</th></tr>{rows}</table></section>"
        )
    back = f'<p><a href="{esc(root)}/traces">← all traces</a> · <a href="{esc(root)}/api/traces/{esc(quote(str(c["id"]), safe=""))}">JSON</a></p>'
    return page(f"protege trace {c['id']}", back + "".join(sections), nav=nav(root))
