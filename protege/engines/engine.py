"""Student inference engines: the embedded one (transformers + PEFT in the
gateway's host) and any OpenAI-compatible server (vLLM, llama.cpp, Ollama).

Both speak one small interface: ``await engine.generate(adapter, request)``
returns the student's answer as an OpenAI assistant message, parsed by the
same code that rendered its training examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("protege.engines")

BASE = "__base__"  # the base model with every adapter disabled


@dataclass
class AdapterSpec:
    """One servable adapter: where it lives and how its prompts are built."""

    name: str = field(metadata={"help": "routing key, e.g. the registry id or task_id:vN"})
    path: Path | None = field(default=None, metadata={"help": "PEFT adapter directory"})
    prefix: dict[str, Any] | None = field(default=None, metadata={"help": "task's static prefix"})
    drop_prefix: bool = field(default=False, metadata={"help": "was the prefix dropped in training"})
    max_new_tokens: int = field(default=256, metadata={"help": "generation budget per answer"})

    @classmethod
    def from_dir(cls, name: str, path: str | Path, **overrides: Any) -> AdapterSpec:
        """Read prefix handling from the adapter's ``protege_adapter.json``."""
        path = Path(path)
        meta: dict[str, Any] = {}
        meta_file = path / "protege_adapter.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
        cfg = meta.get("config") or {}
        values = {
            "prefix": meta.get("prefix"),
            "drop_prefix": bool(meta.get("drop_prefix", cfg.get("drop_prefix", False))),
        }
        if cfg.get("max_new_tokens"):
            values["max_new_tokens"] = int(cfg["max_new_tokens"])
        values.update(overrides)
        return cls(name=name, path=path, **values)


@dataclass
class StudentAnswer:
    message: dict[str, Any]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    text: str = ""
    # Lowest probability of any generated token (``protege.models.confidence``);
    # None where the engine cannot tell.
    confidence: float | None = None
    # Every signal of ``protege.models.confidence.SIGNALS`` the engine measured.
    signals: dict[str, float] | None = None

    def signal(self, name: str | None) -> float | None:
        """The answer's confidence on signal ``name`` (min_prob when unnamed)."""
        if not name or name == "min_prob":
            return self.confidence
        return (self.signals or {}).get(name)


class StudentEngine(Protocol):
    async def generate(self, adapter: str, request: dict[str, Any]) -> StudentAnswer: ...

    def load_adapter(self, spec: AdapterSpec) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def adapters(self) -> list[str]: ...

    def close(self) -> None: ...


def finish_of(message: dict[str, Any], hit_limit: bool) -> str:
    if hit_limit:
        return "length"
    return "tool_calls" if message.get("tool_calls") else "stop"


@dataclass
class _Job:
    adapter: str
    request: dict[str, Any]
    future: Any  # concurrent.futures.Future
    enqueued: float


class EmbeddedEngine:
    """One base model, many LoRA adapters, the adapter chosen per request.

    A single worker thread owns the model: it takes up to ``max_batch`` queued
    requests (waiting ``max_wait_ms`` for company), generates them in one
    left-padded batch — mixed adapters in one batch through PEFT's
    ``adapter_names`` — and resolves each caller's future. Loading, swapping
    and unloading adapters run on that same thread between batches, so a
    promotion or rollback never races a generation.
    """

    def __init__(
        self,
        base: str | tuple[Any, Any],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 4.0,
        max_new_tokens: int = 256,
        threads: int | None = None,
        constrain: bool | str = "schema",
    ) -> None:
        self.max_batch = max_batch
        # Answers follow the request's tool schemas (``protege.models.grammar``): schema, names or off.
        self.constrain = constrain
        self.max_new_tokens = max_new_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self._jobs: queue.Queue[_Job | tuple[str, Any, Any] | None] = queue.Queue()
        self._specs: dict[str, AdapterSpec] = {}
        self._internal: dict[str, str] = {}  # routing name -> PEFT adapter name
        self._counter = 0
        self.batches = 0
        self.batched_requests = 0
        if isinstance(base, tuple):
            self.model, self.tokenizer = base
            self.base_name = getattr(self.model.config, "_name_or_path", "model")
        else:
            from protege.models.loader import inference_dtype, load_base

            self.model, self.tokenizer = load_base(base, dtype=inference_dtype())
            self.base_name = base
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._peft = None
        self.model.eval()
        self._thread = threading.Thread(target=self._run, name="protege-engine", daemon=True)
        self._thread.start()

    # -- adapters (executed on the worker thread) --------------------------
    def _call(self, op: str, arg: Any) -> Any:
        import concurrent.futures

        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((op, arg, fut))
        return fut.result()

    def load_adapter(self, spec: AdapterSpec) -> None:
        """Load (or replace, for hot swap) the adapter served as ``spec.name``."""
        self._call("load", spec)

    def unload_adapter(self, name: str) -> None:
        self._call("unload", name)

    def adapters(self) -> list[str]:
        return sorted(self._specs)

    def _do_load(self, spec: AdapterSpec) -> None:
        from peft import PeftModel

        self._counter += 1
        internal = f"a{self._counter}"
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.model, str(spec.path), adapter_name=internal)
            self._peft.eval()
        else:
            self._peft.load_adapter(str(spec.path), adapter_name=internal)
        old = self._internal.get(spec.name)
        self._internal[spec.name] = internal
        self._specs[spec.name] = spec
        if old is not None:
            self._peft.delete_adapter(old)
        log.info("protege: serving adapter %s from %s", spec.name, spec.path)

    def _do_unload(self, name: str) -> None:
        internal = self._internal.pop(name, None)
        self._specs.pop(name, None)
        if internal is not None and self._peft is not None:
            self._peft.delete_adapter(internal)

    # -- generation --------------------------------------------------------
    async def generate(self, adapter: str, request: dict[str, Any]) -> StudentAnswer:
        import concurrent.futures

        if adapter != BASE and adapter not in self._specs:
            raise KeyError(f"adapter {adapter!r} is not loaded")
        fut: concurrent.futures.Future[StudentAnswer] = concurrent.futures.Future()
        self._jobs.put(_Job(adapter, request, fut, time.perf_counter()))
        return await asyncio.wrap_future(fut)

    def generate_sync(self, adapter: str, requests: list[dict[str, Any]]) -> list[StudentAnswer]:
        """Blocking batch generation (evaluation, benchmarks)."""
        import concurrent.futures

        futs = []
        for req in requests:
            fut: concurrent.futures.Future[StudentAnswer] = concurrent.futures.Future()
            self._jobs.put(_Job(adapter, req, fut, time.perf_counter()))
            futs.append(fut)
        return [f.result() for f in futs]

    def _prompt(self, job: _Job) -> str:
        from protege.models.toolcall import build_prompt

        spec = self._specs.get(job.adapter)
        req = job.request
        return build_prompt(
            req.get("messages") or [],
            req.get("tools"),
            self.tokenizer,
            prefix=spec.prefix if spec else None,
            drop_prefix=bool(spec and spec.drop_prefix),
        )

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            if isinstance(item, tuple):
                self._control(item)
                continue
            batch = [item]
            deadline = time.perf_counter() + self.max_wait_s
            held: list[Any] = []
            while len(batch) < self.max_batch:
                try:
                    nxt = self._jobs.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if isinstance(nxt, _Job):
                    batch.append(nxt)
                else:
                    held.append(nxt)  # control ops and shutdown wait for the batch
                    break
            self._generate_batch(batch)
            for h in held:
                if h is None:
                    return
                self._control(h)

    def _control(self, item: tuple[str, Any, Any]) -> None:
        op, arg, fut = item
        try:
            fut.set_result(self._do_load(arg) if op == "load" else self._do_unload(arg))
        except Exception as exc:
            fut.set_exception(exc)

    def _generate_batch(self, batch: list[_Job]) -> None:
        import torch

        try:
            prompts = [self._prompt(j) for j in batch]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.model.device)  # a base loaded on a GPU generates there
            limits = [
                self._specs[j.adapter].max_new_tokens if j.adapter in self._specs else self.max_new_tokens
                for j in batch
            ]
            max_new = max(limits)
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new,
                "do_sample": False,
                "pad_token_id": self.tokenizer.pad_token_id,
                "eos_token_id": self._stop_ids(),
            }
            from protege.models.confidence import answer_processors

            kwargs["logits_processor"], probs = answer_processors(
                self.tokenizer, [j.request.get("tools") for j in batch], enc["input_ids"].shape[1],
                constrain=self.constrain, requests=[j.request for j in batch],
            )
            model = self.model
            if self._peft is not None:
                model = self._peft
                kwargs["adapter_names"] = [
                    self._internal.get(j.adapter, "__base__") for j in batch
                ]
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            elapsed_ms = (time.perf_counter() - t0) * 1000
            self.batches += 1
            self.batched_requests += len(batch)
            from protege.models.toolcall import parse_completion

            width = enc["input_ids"].shape[1]
            stops = set(self._stop_ids())
            for i, job in enumerate(batch):
                gen = out[i, width:].tolist()[: limits[i]]
                n = len(gen)
                while n and gen[n - 1] == self.tokenizer.pad_token_id and gen[n - 1] not in stops:
                    n -= 1
                hit_stop = any(t in stops for t in gen[:n])
                if hit_stop:
                    n = next(k for k, t in enumerate(gen) if t in stops)
                # The stop token counts: stopping too early is an error too.
                text = self.tokenizer.decode(gen[:n], skip_special_tokens=True)
                message = parse_completion(text)
                signals = probs.signals(i, n + 1 if hit_stop else n, text=not message.get("tool_calls"))
                confidence = None if signals is None else signals["min_prob"]
                job.future.set_result(
                    StudentAnswer(
                        message=message,
                        finish_reason=finish_of(message, not hit_stop and n >= limits[i]),
                        prompt_tokens=int(enc["attention_mask"][i].sum()),
                        completion_tokens=n,
                        latency_ms=(time.perf_counter() - job.enqueued) * 1000,
                        text=text,
                        confidence=confidence,
                        signals=signals,
                    )
                )
            log.debug("protege: batch of %d in %.0f ms", len(batch), elapsed_ms)
        except Exception as exc:  # each caller falls back to the teacher
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        for tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid >= 0:
                ids.add(tid)
        return [i for i in ids if i is not None]

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)


class OpenAICompatEngine:
    """A student served by an OpenAI-compatible server (vLLM with
    ``--enable-lora``, llama.cpp's server, Ollama). The prompt is rendered
    here, exactly as in training, and sent to ``/v1/completions``; the
    adapter is addressed as the model name.

    With ``vllm=True`` adapters are loaded and unloaded through vLLM's
    dynamic-LoRA endpoints as the registry promotes and demotes, and each
    request carries the grammar of its tool schemas
    (``protege.models.grammar``) in ``structured_outputs`` (vLLM >= 0.12;
    ``guided="guided_grammar"`` for older servers). The grammar is written in
    llguidance's dialect: the server needs the ``guidance`` backend
    (``protege.engines.vllm.vllm_command`` starts it so).
    """

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        transport: Any = None,
        sync_transport: Any = None,
        vllm: bool = False,
        guided: str | None = None,
        top_logprobs: int = 2,
    ) -> None:
        import httpx

        if guided not in (None, *GUIDED_FIELDS):
            raise ValueError(f"unknown guided decoding field {guided!r} (one of {', '.join(GUIDED_FIELDS)})")
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.vllm = vllm
        # Only vLLM is known to take the grammar; other servers get none by default.
        self.guided = guided if guided is not None else ("structured_outputs" if vllm else "off")
        # Two per step: the runner-up gives the margin signal as the embedded engine measures it.
        self.top_logprobs = top_logprobs
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._sync = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s,
                                  transport=sync_transport)
        self._specs: dict[str, AdapterSpec] = {}

    def load_adapter(self, spec: AdapterSpec) -> None:
        """Load (or replace, on a new promotion) the adapter served as ``spec.name``."""
        if self.vllm and spec.path is not None:
            # vLLM refuses a name it already serves: drop the old version first
            # (a 404 here only says it was not loaded). Needs
            # VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on the server.
            r = self._sync.post("/v1/unload_lora_adapter", json={"lora_name": spec.name})
            if r.status_code >= 500:
                raise RuntimeError(f"vLLM failed unloading {spec.name}: {r.status_code} {r.text[:200]}")
            r = self._sync.post(
                "/v1/load_lora_adapter", json={"lora_name": spec.name, "lora_path": str(spec.path)}
            )
            if r.status_code >= 400:
                raise RuntimeError(f"vLLM refused adapter {spec.name}: {r.status_code} {r.text[:200]}")
        self._specs[spec.name] = spec

    def unload_adapter(self, name: str) -> None:
        # Forget it first: even if vLLM is unreachable, no request is routed to it again.
        self._specs.pop(name, None)
        if self.vllm:
            r = self._sync.post("/v1/unload_lora_adapter", json={"lora_name": name})
            if r.status_code >= 400 and r.status_code != 404:
                raise RuntimeError(f"vLLM failed unloading {name}: {r.status_code} {r.text[:200]}")

    def adapters(self) -> list[str]:
        return sorted(self._specs)

    def request_body(self, adapter: str, request: dict[str, Any]) -> dict[str, Any]:
        """The ``/v1/completions`` body for one chat request (prompt rendered as in training)."""
        from protege.models.toolcall import build_prompt

        spec = self._specs.get(adapter) or AdapterSpec(name=adapter)
        prompt = build_prompt(
            request.get("messages") or [],
            request.get("tools"),
            self.tokenizer,
            prefix=spec.prefix,
            drop_prefix=spec.drop_prefix,
        )
        body: dict[str, Any] = {
            "model": adapter,
            "prompt": prompt,
            "max_tokens": spec.max_new_tokens,
            "temperature": 0,
            # For the answer's confidence; servers without logprobs send none.
            "logprobs": self.top_logprobs,
        }
        if self.guided != "off":
            from protege.models.grammar import request_grammar

            grammar = request_grammar(request)
            if grammar is not None:
                if self.guided == "structured_outputs":
                    body["structured_outputs"] = {"grammar": grammar}
                else:
                    body["guided_grammar"] = grammar
        return body

    async def generate(self, adapter: str, request: dict[str, Any]) -> StudentAnswer:
        from protege.models.toolcall import parse_completion

        t0 = time.perf_counter()
        r = await self._client.post("/v1/completions", json=self.request_body(adapter, request))
        r.raise_for_status()
        body = r.json()
        choice = (body.get("choices") or [{}])[0]
        text = choice.get("text") or ""
        message = parse_completion(text)
        usage = body.get("usage") or {}
        lp = choice.get("logprobs")
        signals = logprob_signals(lp, text=not message.get("tool_calls")) if isinstance(lp, dict) else None
        return StudentAnswer(
            message=message,
            finish_reason=finish_of(message, choice.get("finish_reason") == "length"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_ms=(time.perf_counter() - t0) * 1000,
            text=text,
            confidence=None if signals is None else signals["min_prob"],
            signals=signals,
        )

    def close(self) -> None:
        self._sync.close()
        try:
            asyncio.get_running_loop().create_task(self._client.aclose())
        except RuntimeError:
            asyncio.run(self._client.aclose())


# Where a request's grammar goes: vLLM >= 0.12 reads ``structured_outputs``,
# older servers ``guided_grammar``; "off" sends none.
GUIDED_FIELDS = ("structured_outputs", "guided_grammar", "off")


def logprob_signals(logprobs: dict[str, Any], text: bool | None = None) -> dict[str, float] | None:
    """``protege.models.confidence.SIGNALS`` from an OpenAI completions
    ``logprobs`` object (``token_logprobs`` of the chosen tokens,
    ``top_logprobs`` one dict per step); ``min_margin`` needs two per step.
    ``text``: the answer holds no call. Its judged figures need the first
    step's chance of opening a call; a server tells only its top few tokens,
    so an opener outside them is taken as likely as the least of them (the
    figure can only come out lower than the embedded engine's)."""
    import math

    from protege.models.confidence import from_logprobs, judged, opens_call

    chosen = [float(x) for x in logprobs.get("token_logprobs") or [] if x is not None]
    low = from_logprobs(chosen)
    if low is None:
        return None
    out = {"min_prob": low, "mean_logprob": sum(chosen) / len(chosen)}
    tops = logprobs.get("top_logprobs") or []
    margins = []
    for step in tops:
        if isinstance(step, dict) and step:
            probs = sorted((math.exp(float(v)) for v in step.values()), reverse=True)
            margins.append(probs[0] - (probs[1] if len(probs) > 1 else 0.0))
    if margins and len(margins) == len(chosen):
        out["min_margin"] = min(margins)
    first = tops[0] if tops and isinstance(tops[0], dict) and tops[0] else None
    p_call = None
    if first is not None:
        listed = {str(k): math.exp(float(v)) for k, v in first.items()}
        p_call = sum(p for k, p in listed.items() if opens_call(k))
        if not p_call:
            p_call = min(listed.values())
    return judged(out, text, p_call)
