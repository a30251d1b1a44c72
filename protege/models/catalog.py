"""The catalog of candidate small models: data (JSON), not code. The packaged
``protege/data/catalog.json``, merged by ``name`` with the user's
``PROTEGE_HOME/catalog.json`` (or ``.yaml``); the layout and the merge rules are
in docs/models.md (The catalog)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from protege.config import protege_home

# Bytes per parameter for weights, and a margin for activations, KV cache and
# runtime buffers at modest context lengths. 4-bit (NF4 / Q4_K) stores ~4.5 bits
# per weight once block scales are counted.
_BYTES_PER_PARAM = {"bf16": 2.0, "4bit": 0.5625, "fp32": 4.0}
_OVERHEAD = 1.2
_OVERHEAD_GB = 0.3

TOOL_CALL_FORMATS = ("hermes", "llama3-json", "json-list", "phi4", "none")


class CatalogError(ValueError):
    """The catalog (packaged or the user's) is malformed."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One candidate base model."""

    name: str = field(metadata={"help": "Short name used on the command line"})
    hub_id: str = field(metadata={"help": "Hugging Face hub id"})
    parameters: int = field(metadata={"help": "Total parameter count"})
    context_window: int = field(metadata={"help": "Native context length in tokens"})
    licence: str = field(metadata={"help": "SPDX-style licence id (apache-2.0, mit, llama3.2, gemma, ...)"})
    family: str = field(default="", metadata={"help": "Model family"})
    architecture: str = field(default="", metadata={"help": "transformers model_type (llama, qwen2, ...)"})
    chat_template: bool = field(default=True, metadata={"help": "Ships a chat template"})
    instruct: bool = field(default=True, metadata={"help": "Instruction-tuned (False: base model)"})
    tool_call_format: str = field(
        default="none",
        metadata={"help": "Native tool-call format: " + ", ".join(TOOL_CALL_FORMATS)},
    )
    lora_target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata={"help": "Linear layers LoRA adapts"},
    )
    qlora: bool = field(default=True, metadata={"help": "4-bit QLoRA (bitsandbytes) is known to work"})
    offline: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Offline source: {kind: gguf-package, package, file} (a GGUF inside a Python package), "
            "{kind: gguf-assemble, package, file} (a package with assemble()), {kind: gguf-file, path}"
        },
    )
    path: str | None = field(default=None, metadata={"help": "Local model directory (usable offline)"})
    memory_gb: dict[str, float] | None = field(
        default=None, metadata={"help": "Inference memory in GB by precision, overriding the estimate"}
    )
    notes: str = field(default="", metadata={"help": "Anything worth knowing"})
    user: bool = field(default=False, metadata={"help": "Defined or changed by the user's catalog"})

    def memory(self, precision: str = "bf16") -> float:
        """Inference memory in GB at ``precision`` (bf16, 4bit, fp32)."""
        if self.memory_gb and precision in self.memory_gb:
            return float(self.memory_gb[precision])
        if precision not in _BYTES_PER_PARAM:
            raise ValueError(f"unknown precision {precision!r}: use one of {sorted(_BYTES_PER_PARAM)}")
        return round(self.parameters * _BYTES_PER_PARAM[precision] * _OVERHEAD / 1e9 + _OVERHEAD_GB, 2)

    @property
    def has_offline_source(self) -> bool:
        return self.offline is not None or bool(self.path)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["lora_target_modules"] = list(self.lora_target_modules)
        out["memory_bf16_gb"] = self.memory("bf16")
        out["memory_4bit_gb"] = self.memory("4bit")
        return out


_FIELDS = {f.name for f in fields(ModelSpec)}
_REQUIRED = ("name", "hub_id", "parameters", "context_window", "licence")


def _spec_of(entry: dict[str, Any], source: str) -> ModelSpec:
    missing = [k for k in _REQUIRED if entry.get(k) in (None, "")]
    if missing:
        raise CatalogError(f"{source}: model {entry.get('name')!r} lacks {', '.join(missing)}")
    unknown = set(entry) - _FIELDS - {"disabled"}
    if unknown:
        raise CatalogError(f"{source}: model {entry['name']!r} has unknown fields {sorted(unknown)}")
    kw = {k: v for k, v in entry.items() if k in _FIELDS}
    if "lora_target_modules" in kw:
        kw["lora_target_modules"] = tuple(kw["lora_target_modules"])
    if kw.get("tool_call_format", "none") not in TOOL_CALL_FORMATS:
        raise CatalogError(
            f"{source}: model {entry['name']!r}: tool_call_format must be one of {', '.join(TOOL_CALL_FORMATS)}"
        )
    try:
        kw["parameters"] = parse_params(kw["parameters"])
        kw["context_window"] = int(kw["context_window"])
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{source}: model {entry['name']!r}: {exc}") from None
    return ModelSpec(**kw)


def _read_entries(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise CatalogError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
        doc = yaml.safe_load(text) or {}
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{path}: not valid JSON: {exc}") from None
    entries = doc.get("models") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("name") for e in entries):
        raise CatalogError(f"{path}: expected {{'models': [{{'name': ...}}, ...]}}")
    return entries


def packaged_entries() -> list[dict[str, Any]]:
    text = resources.files("protege").joinpath("data/catalog.json").read_text()
    return json.loads(text)["models"]


def user_catalog_path() -> Path | None:
    """``PROTEGE_CATALOG`` if set, else ``PROTEGE_HOME/catalog.{json,yaml,yml}``."""
    env = os.environ.get("PROTEGE_CATALOG")
    if env:
        return Path(env).expanduser()
    for name in ("catalog.json", "catalog.yaml", "catalog.yml"):
        p = protege_home() / name
        if p.exists():
            return p
    return None


class Catalog:
    """Model specs by name, in catalog order; lookups also accept hub ids."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for s in specs:
            self._specs[s.name] = s

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def find(self, name_or_id: str) -> ModelSpec | None:
        if name_or_id in self._specs:
            return self._specs[name_or_id]
        low = name_or_id.lower()
        for s in self._specs.values():
            if s.name.lower() == low or s.hub_id.lower() == low:
                return s
        return None

    def get(self, name_or_id: str) -> ModelSpec:
        spec = self.find(name_or_id)
        if spec is None:
            raise KeyError(
                f"unknown model {name_or_id!r}: see `protege models list` (known: {', '.join(self.names)})"
            )
        return spec

    def filter(self, constraints: Constraints) -> list[ModelSpec]:
        return [s for s in self if not constraints.rejects(s)]


def load_catalog(user_path: str | Path | None = None) -> Catalog:
    """The packaged catalog merged with the user's (docs/models.md, Your own models)."""
    merged: dict[str, dict[str, Any]] = {e["name"]: dict(e) for e in packaged_entries()}
    path = Path(user_path) if user_path else user_catalog_path()
    if path is not None:
        if not path.exists():
            raise CatalogError(f"user catalog {path} does not exist")
        for entry in _read_entries(path):
            base = merged.get(entry["name"], {})
            merged[entry["name"]] = {**base, **entry, "user": True}
    specs = []
    for entry in merged.values():
        if entry.get("disabled"):
            continue
        specs.append(_spec_of(entry, str(path) if entry.get("user") else "packaged catalog"))
    return Catalog(specs)


_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_params(text: str | int | float) -> int:
    """'1B' -> 1e9, '360M' -> 3.6e8, '1.5b', 500000000."""
    if isinstance(text, (int, float)):
        return int(text)
    t = text.strip().lower().replace("_", "")
    try:
        if t and t[-1] in _SUFFIX:
            return int(float(t[:-1]) * _SUFFIX[t[-1]])
        return int(float(t))
    except ValueError:
        raise ValueError(f"not a parameter count: {text!r} (use e.g. 500M, 1.5B)") from None


def human_params(n: int) -> str:
    if n >= 0.995e9:  # 999.9M reads better as 1B
        return f"{n / 1e9:.2f}B".replace(".00B", "B")
    return f"{n / 1e6:.0f}M"


@dataclass(kw_only=True)
class Constraints:
    """What a candidate must satisfy to be tried on a task."""

    max_params: int | None = field(default=None, metadata={"help": "Largest parameter count allowed"})
    licences: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Licence allow-list (case-insensitive); None allows all"}
    )
    memory_gb: float | None = field(default=None, metadata={"help": "Inference memory budget in GB"})
    precision: str = field(default="bf16", metadata={"help": "Precision the memory budget assumes: bf16, 4bit"})
    min_context: int | None = field(
        default=None, metadata={"help": "Context window needed (the task's longest prompt, in tokens)"}
    )
    gpu_memory_gb: float | None = field(
        default=None, metadata={"help": "GPU memory of the machine that will serve the student, in GB"}
    )
    cpu_ram_gb: float | None = field(
        default=None, metadata={"help": "RAM of the machine that will serve the student, in GB"}
    )

    def with_machine(self, *, gpu_memory_gb: float | None = None, cpu_ram_gb: float | None = None) -> Constraints:
        """These constraints for this machine: its GPU memory (0 without CUDA)
        and its RAM, each measured unless given."""
        from dataclasses import replace

        return replace(self, gpu_memory_gb=gpu_memory_gb if gpu_memory_gb is not None else machine_gpu_gb(),
                       cpu_ram_gb=cpu_ram_gb if cpu_ram_gb is not None else machine_ram_gb())

    def reasons(self, spec: ModelSpec) -> list[str]:
        """Why ``spec`` is rejected (empty when it passes)."""
        out = []
        if self.max_params is not None and spec.parameters > self.max_params:
            out.append(f"{human_params(spec.parameters)} parameters > {human_params(self.max_params)}")
        if self.licences is not None and spec.licence.lower() not in {x.lower() for x in self.licences}:
            out.append(f"licence {spec.licence} not allowed")
        if self.memory_gb is not None and spec.memory(self.precision) > self.memory_gb:
            out.append(f"needs {spec.memory(self.precision):.1f} GB ({self.precision}) > {self.memory_gb:g} GB")
        machine = [(self.gpu_memory_gb, "GPU memory"), (self.cpu_ram_gb, "RAM")]
        if any(gb is not None for gb, _ in machine):
            # A student runs where it fits: on the GPU, else on the CPU.
            need = spec.memory(self.precision)
            if not any(gb is not None and need <= gb for gb, _ in machine):
                have = " or ".join(f"{gb:g} GB {what}" for gb, what in machine if gb is not None)
                out.append(f"needs {need:.1f} GB ({self.precision}) > {have}")
        if self.min_context is not None and spec.context_window < self.min_context:
            out.append(f"context {spec.context_window} < {self.min_context} tokens")
        return out

    def rejects(self, spec: ModelSpec) -> bool:
        return bool(self.reasons(spec))


def machine_ram_gb() -> float | None:
    """This machine's total RAM in GB (None where it cannot tell)."""
    import os

    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine_gpu_gb() -> float:
    """Memory of this machine's largest CUDA GPU in GB; 0 without one (or without torch)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return 0.0
    import torch

    if not torch.cuda.is_available():
        return 0.0
    return round(max(torch.cuda.get_device_properties(i).total_memory
                     for i in range(torch.cuda.device_count())) / 1e9, 1)
