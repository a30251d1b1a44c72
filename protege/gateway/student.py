"""The student side of the gateway: which adapters serve which task, the
student's answer (validated before any byte leaves), shadow runs.

The gateway asks ``StudentPath.decide`` for every chat request. Adapters are
read from the registry and the routes from the store; a background thread
polls both so that a promotion, a rollback or a route change takes effect
within seconds without a restart, on every replica sharing the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protege.engines.engine import AdapterSpec, StudentAnswer
from protege.gateway.config import GatewayConfig
from protege.gateway.storage import LazyStore
from protege.router.router import Decision, Router, StudentInfo
from protege.router.routes import RouteTable
from protege.router.validate import validate_answer
from protege.safejson import json_loads

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger("protege.gateway")


def agree(student: dict[str, Any], teacher: dict[str, Any], tools: Any = None) -> bool:
    """Is the student's answer equivalent to the teacher's? Tool calls: the
    same calls as a set, arguments compared as the tools' schemas read them
    (5 and 5.0 for a number, omitted optional arguments at their defaults,
    any key order; ``protege.evaluate.metrics.match_calls``). Text answers:
    the same content up to whitespace and case (JSON content compared parsed)."""
    if student.get("tool_calls") or teacher.get("tool_calls"):
        from protege.evaluate.metrics import match_calls, tool_calls_of, tool_schemas

        return match_calls(tool_calls_of(student), tool_calls_of(teacher), tool_schemas(tools))[0]
    a, b = (student.get("content") or "").strip(), (teacher.get("content") or "").strip()
    try:
        return json_loads(a) == json_loads(b)
    except ValueError:
        return " ".join(a.lower().split()) == " ".join(b.lower().split())


def _teacher_message(body: bytes, streamed: bool) -> dict[str, Any] | None:
    if streamed:
        from protege.capture.stream import StreamAccumulator

        acc = StreamAccumulator()
        acc.feed_sse_bytes(body)
        completion: Any = acc.result()
    else:
        try:
            completion = json_loads(body)
        except ValueError:
            return None
    try:
        return completion["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None


def student_completion(answer: StudentAnswer, *, adapter: str, completion_id: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": adapter,
        "choices": [
            {"index": 0, "message": answer.message, "finish_reason": answer.finish_reason, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        },
    }


class StudentPath:
    """Routing plus the student engine, kept in step with the store."""

    def __init__(self, store: TraceStore, engine: Any, *, poll_s: float = 2.0, assign: Any = None) -> None:
        self.store = store
        self.engine = engine
        self.poll_s = poll_s
        self.routes = RouteTable(store, poll_s=poll_s)
        self._students: dict[str, StudentInfo] = {}
        self._loaded: dict[str, str] = {}  # task_id -> adapter id currently in the engine
        self._registry_stamp = -1.0
        self._index: Any = None
        self._assign_override = assign
        self._stop = threading.Event()
        from protege.registry import Registry

        self._registry = Registry(store)
        self.router = Router(assign=self._assign, promoted=self._students.get, routes=self.routes)
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="protege-student-sync", daemon=True)
        self._thread.start()

    # -- keeping in step with the store -----------------------------------
    def _assign(self, request: dict[str, Any], tag: str | None) -> tuple[str | None, float | None]:
        if self._assign_override is not None:
            return self._assign_override(request, tag)
        index = self._index
        if index is None:
            return (tag, 1.0) if tag else (None, None)
        return index.assign(request, task_tag=tag)

    def sync(self) -> None:
        """Reload task index, adapters and routes if anything changed."""
        self.routes.refresh()
        reg = self._registry
        try:
            stamp = reg.changed_at()
        except Exception as exc:  # keep serving what is loaded
            log.warning("protege: cannot read the adapter registry: %s", exc)
            return
        if stamp == self._registry_stamp:
            return
        self._registry_stamp = stamp
        self._reload_index()
        wanted = {}
        for rec in reg.list(status="shadow"):
            wanted.setdefault(rec.task_id, rec)
        wanted.update(reg.promoted_all())  # a promoted adapter wins over a shadow one
        for task_id, rec in wanted.items():
            if self._loaded.get(task_id) == rec.id:
                self._students[task_id] = self._info(rec)
                continue
            if not rec.path or not Path(rec.path).exists():
                log.error("protege: adapter %s has no files at %s; task stays with the teacher", rec.ref, rec.path)
                continue
            try:
                self.engine.load_adapter(AdapterSpec.from_dir(task_id, rec.path))
            except Exception as exc:
                log.error("protege: could not load adapter %s: %s", rec.ref, exc)
                continue
            self._loaded[task_id] = rec.id
            self._students[task_id] = self._info(rec)
            log.info("protege: task %s now served by %s (%s)", task_id, rec.ref, rec.status)
        for task_id in list(self._loaded):
            if task_id not in wanted:
                self._students.pop(task_id, None)
                self._loaded.pop(task_id, None)
                try:
                    self.engine.unload_adapter(task_id)
                except Exception as exc:
                    log.warning("protege: unloading %s failed: %s", task_id, exc)
                log.info("protege: task %s back to the teacher", task_id)

    def _info(self, rec: Any) -> StudentInfo:
        tools = rec.config.get("tools") if isinstance(rec.config, dict) else None
        meta_file = Path(rec.path or ".") / "protege_adapter.json"
        if tools is None and meta_file.exists():
            try:
                tools = json.loads(meta_file.read_text()).get("tools")
            except ValueError:
                tools = None
        serving = (rec.metrics or {}).get("serving") if isinstance(rec.metrics, dict) else None
        floor = serving.get("min_confidence") if isinstance(serving, dict) else None
        return StudentInfo(
            adapter=rec.ref,
            tools=frozenset(tools) if tools is not None else None,
            status="promoted" if rec.status == "promoted" else "shadow",
            min_confidence=float(floor) if floor is not None else None,
            confidence_signal=serving.get("signal") if isinstance(serving, dict) else None,
        )

    def _reload_index(self) -> None:
        if self._assign_override is not None:
            return
        try:
            from protege.tasks import TaskIndex

            self._index = TaskIndex.load(self.store)
        except Exception as exc:
            log.warning("protege: no task index (%s); only X-Protege-Task tags are routed", exc)
            self._index = None

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.sync()
            except Exception:  # pragma: no cover - never let the poller die
                log.exception("protege: student sync failed")

    def close(self) -> None:
        self._stop.set()
        self.routes.stop()

    # -- per request --------------------------------------------------------
    def decide(self, request: dict[str, Any], *, tag: str | None, key: str | None) -> Decision:
        return self.router.decide(request, tag=tag, key=key)

    async def answer(self, request: dict[str, Any], decision: Decision) -> tuple[StudentAnswer | None, list[str]]:
        """The student's answer and the reasons it must not be served (empty: valid)."""
        try:
            ans = await self.engine.generate(decision.task_id, request)
        except Exception as exc:
            return None, [f"engine_error:{type(exc).__name__}"]
        reasons = validate_answer(request, ans.message, ans.finish_reason)
        floor = decision.min_confidence
        conf = ans.signal(decision.confidence_signal) if hasattr(ans, "signal") else ans.confidence
        if floor is not None and (conf is None or conf < floor):
            # Below the gate's floor the student was not shown to match the teacher.
            reasons.append("low_confidence" if conf is not None else "no_confidence")
        return ans, reasons

    def shadow(self, request: dict[str, Any], decision: Decision, teacher_body: bytes, trace_id: str,
               *, streamed: bool = False) -> None:
        """Run the student in the background and store whether it agreed.
        ``teacher_body`` is the teacher's JSON answer, or its SSE stream when
        ``streamed`` (reassembled here, off the request path)."""

        async def run() -> None:
            ans, reasons = await self.answer(request, decision)
            teacher = _teacher_message(teacher_body, streamed)
            row = {
                "trace_id": trace_id,
                "task_id": decision.task_id,
                "adapter": decision.adapter,
                # Agreement is judged on the answers the student would serve:
                # one under its confidence floor would have gone to the teacher.
                "agree": None
                if teacher is None or ans is None or any(r.endswith("_confidence") for r in reasons)
                else int(agree(ans.message, teacher, request.get("tools"))),
                "valid": int(ans is not None and not reasons),
                "reasons": json.dumps(reasons) if reasons else None,
                "student_response": json.dumps(ans.message) if ans is not None else None,
                "latency_ms": ans.latency_ms if ans is not None else None,
                "created_at": time.time(),
            }
            await asyncio.to_thread(self._store_shadow, row)

        asyncio.get_running_loop().create_task(run())

    def _store_shadow(self, row: dict[str, Any]) -> None:
        from protege.router.migrations import shadow_results

        try:
            with self.store.write() as conn:
                conn.execute(shadow_results.insert().values(**row))
        except Exception as exc:
            log.warning("protege: shadow result not stored (%s)", type(exc).__name__)


def _tokenizer_for(base: str) -> Any:
    """The base model's tokenizer alone (an external engine holds the weights)."""
    from transformers import AutoTokenizer

    from protege.models.catalog import load_catalog
    from protege.models.loader import ensure_cached

    if Path(base).is_dir():
        return AutoTokenizer.from_pretrained(base)
    spec = load_catalog().find(base)
    if spec is not None and spec.offline:
        return AutoTokenizer.from_pretrained(str(ensure_cached(spec.name)))
    return AutoTokenizer.from_pretrained(spec.hub_id if spec is not None else base)


def build_student_path(cfg: GatewayConfig, store: TraceStore | LazyStore) -> StudentPath:
    """The student engine and router for ``cfg`` (loads the base model)."""
    from protege.engines.engine import EmbeddedEngine, OpenAICompatEngine

    real_store = store._get() if isinstance(store, LazyStore) else store
    if cfg.engine == "embedded":
        engine: Any = EmbeddedEngine(cfg.base_model, max_batch=cfg.max_batch)
    elif cfg.engine == "openai":
        if not cfg.engine_url:
            raise ValueError("engine 'openai' needs engine_url (the student server's /v1 base URL)")
        engine = OpenAICompatEngine(cfg.engine_url.removesuffix("/v1"), _tokenizer_for(cfg.base_model),
                                    vllm=cfg.engine_vllm, guided=cfg.engine_guided)
    else:
        raise ValueError(f"unknown student engine {cfg.engine!r}: use embedded or openai")
    return StudentPath(real_store, engine, poll_s=cfg.route_poll_s)
