"""Gateway settings. Every field has an offline-friendly default; the CLI
(``protege serve``) maps its options onto these."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protege.capture.writer import WriterConfig
from protege.config import teacher_url

# Fields under their former names: still accepted as keywords and attributes.
RENAMED = {"upstream": "teacher", "upstream_key_env": "teacher_key_env"}


class _OldName:
    """A field's former name, reading and writing the field (DeprecationWarning)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old, self.new = name, RENAMED[name]

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        warnings.warn(f"GatewayConfig.{self.old} is now GatewayConfig.{self.new}", DeprecationWarning, stacklevel=2)
        return getattr(obj, self.new)

    def __set__(self, obj: Any, value: Any) -> None:
        warnings.warn(f"GatewayConfig.{self.old} is now GatewayConfig.{self.new}", DeprecationWarning, stacklevel=2)
        setattr(obj, self.new, value)


@dataclass(kw_only=True)
class GatewayConfig:
    teacher: str = field(
        default_factory=teacher_url,
        metadata={"help": "OpenAI-compatible base URL of the teacher, /v1 included (PROTEGE_TEACHER)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8787, metadata={"help": "port to listen on"})
    db_url: str | None = field(
        default=None, metadata={"help": "trace store URL (default: PROTEGE_DB_URL, else the SQLite file)"}
    )
    teacher_key_env: str | None = field(
        default=None,
        metadata={
            "help": "environment variable holding the teacher's API key; when set it replaces the "
            "client's Authorization header"
        },
    )
    redact: str | None = field(
        default=None,
        metadata={"help": "module:function applied to every trace before it is stored (e.g. a PII scrubber)"},
    )
    timeout_s: float = field(default=600.0, metadata={"help": "teacher read timeout (whole answer) in seconds"})
    connect_timeout_s: float = field(default=10.0, metadata={"help": "teacher connect timeout in seconds"})
    max_connections: int = field(default=512, metadata={"help": "pooled connections to the teacher"})
    client: str = field(
        default="auto",
        metadata={"help": "HTTP client to the teacher: aiohttp (faster, if installed), httpx, or auto"},
    )
    gateway_keys: list[str] | None = field(
        default=None,
        metadata={
            "help": "accepted gateway API keys; None reads PROTEGE_GATEWAY_KEYS (comma list) and the keys "
            "file; when none exist the gateway is open"
        },
    )
    keys_file: Path | None = field(
        default=None, metadata={"help": "hashed gateway keys file (default PROTEGE_HOME/gateway_keys.json)"}
    )
    capture_process: bool = field(
        default=False,
        metadata={
            "help": "build and store traces in a child process (protege serve turns it on) so capture "
            "never competes with request handling for the GIL; needs db_url, not an injected store"
        },
    )
    students: bool = field(
        default=False,
        metadata={
            "help": "serve promoted students: route each call to its task's adapter when the task's route "
            "says so, validate the answer, fall back to the teacher (needs the ml extra)"
        },
    )
    base_model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "base model the students' adapters were trained on (catalog name, hub id or path)"},
    )
    engine: str = field(
        default="embedded",
        metadata={"help": "student engine: embedded (transformers + PEFT in this process) or openai (vLLM, "
                  "llama.cpp or Ollama at engine_url)"},
    )
    engine_url: str | None = field(
        default=None, metadata={"help": "base URL of the OpenAI-compatible student server (engine=openai)"}
    )
    engine_vllm: bool = field(
        default=False, metadata={"help": "the student server is vLLM: load adapters through its LoRA API"}
    )
    engine_guided: str | None = field(
        default=None,
        metadata={"help": "request field for the tool schemas' grammar: structured_outputs (vLLM >= 0.12), "
                  "guided_grammar (older vLLM) or off; default structured_outputs for vLLM, off otherwise"},
    )
    max_batch: int = field(default=8, metadata={"help": "embedded engine: requests generated together"})
    route_poll_s: float = field(
        default=2.0, metadata={"help": "seconds between reads of routes and promoted adapters from the store"}
    )
    max_body_bytes: int = field(
        default=8 * 1024**2,
        metadata={"help": "largest request body accepted (chat and feedback); a larger one gets a 413"},
    )
    open_metrics: bool = field(
        default=False,
        metadata={"help": "with gateway keys on, still serve /metrics and a minimal /health without a key "
                  "(for a scraper or a load balancer)"},
    )
    durability: str = field(
        default="write",
        metadata={"help": "when a call's capture is safe: write (journaled to the OS before the answer is sent; "
                  "survives a kill -9 of any process, an OS crash loses at most fsync_interval_s), fsync (the "
                  "answer waits for a group fsync: survives a power cut), off (queued in memory only)"},
    )
    fsync_interval_s: float = field(
        default=0.05, metadata={"help": "durability=write: the journal is fsynced this often (the OS-crash window)"}
    )
    capture: WriterConfig = field(
        default_factory=WriterConfig, metadata={"help": "capture queue, batching and spool settings"}
    )

    upstream = _OldName()
    upstream_key_env = _OldName()

    @property
    def teacher_base(self) -> str:
        return self.teacher.rstrip("/")


def _accept_old_names(init: Any) -> Any:
    @functools.wraps(init)
    def __init__(self: GatewayConfig, **kwargs: Any) -> None:
        for old, new in RENAMED.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"GatewayConfig: give {new}= only, not also {old}=")
                warnings.warn(f"GatewayConfig({old}=...) is now {new}=...", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
        init(self, **kwargs)

    return __init__


GatewayConfig.__init__ = _accept_old_names(GatewayConfig.__init__)  # type: ignore[method-assign]
