"""Start a vLLM OpenAI server with runtime LoRA loading, for ``protege serve
--engine vllm``. vLLM is an optional extra (GPU); nothing here imports it."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from typing import Any


class VllmError(RuntimeError):
    """vLLM is missing or did not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_command(model: str, port: int, *, max_loras: int = 8, max_lora_rank: int = 64,
                 extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--host", "127.0.0.1", "--port", str(port),
        "--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank),
        # The answer grammars are written in llguidance's dialect (protege.models.grammar).
        "--structured-outputs-config.backend", "guidance",
        # Logprobs after the grammar mask, as the embedded engine measures confidence.
        "--logprobs-mode", "processed_logprobs",
        *(extra or []),
    ]


def resolve_model(base_model: str) -> str:
    """A directory or hub id vLLM can load: embedded models use protege's safetensors cache."""
    from pathlib import Path

    if Path(base_model).is_dir():
        return base_model
    from protege.models.catalog import load_catalog
    from protege.models.loader import ensure_cached

    spec = load_catalog().find(base_model)
    if spec is None:
        return base_model
    return str(ensure_cached(spec.name)) if spec.offline else spec.hub_id


def start_vllm(base_model: str, *, port: int | None = None, timeout_s: float = 600.0,
               extra: list[str] | None = None) -> tuple[Any, str]:
    """Launch vLLM and wait until it answers; returns (process, base URL).
    ``extra``: more ``vllm serve`` arguments (memory share, context length)."""
    if importlib.util.find_spec("vllm") is None:
        raise VllmError("vLLM is not installed: it is an optional extra (pip install 'protege[gpu]'), "
                        "or pass --engine-url of a running server")
    port = port or _free_port()
    env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
    proc = subprocess.Popen(vllm_command(resolve_model(base_model), port, extra=extra), env=env)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VllmError(f"vLLM exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(2)
    proc.terminate()
    raise VllmError(f"vLLM did not answer on {url} within {timeout_s:.0f}s")
