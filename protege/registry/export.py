"""Export a registered adapter: the PEFT adapter, a merged model, or GGUF.

* ``adapter``: a copy of the PEFT adapter directory (load it on the base model
  with ``PeftModel.from_pretrained``);
* ``merged``: base + adapter merged (``merge_and_unload``) and saved as
  safetensors with the tokenizer, a plain transformers model;
* ``gguf``: the merged model written as a GGUF file for llama.cpp and Ollama.
  llama.cpp's ``convert_hf_to_gguf.py`` is not published on PyPI (the ``gguf``
  package ships the writer, not the converters), so protege writes the file
  itself with ``gguf.GGUFWriter`` for the Llama architecture (SmolLM2 is
  Llama), at f32 or f16, with the byte-level BPE tokenizer and chat template.

Each export also writes ``protege-adapter.json`` (task, version, base model,
dataset, config, metrics) so the files say where they came from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from protege.registry.registry import AdapterRecord

FORMATS = ("adapter", "merged", "gguf")


class ExportError(ValueError):
    """The adapter cannot be exported in the requested format."""


def _provenance(rec: AdapterRecord, out: Path, fmt: str, **extra: Any) -> None:
    info = {**rec.to_dict(), "format": fmt, **extra}
    (out / "protege-adapter.json").write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str))


def _adapter_path(rec: AdapterRecord) -> Path:
    path = Path(rec.path or "")
    if not (path / "adapter_config.json").exists():
        raise ExportError(f"{rec.ref}: no PEFT adapter at {path} (adapter_config.json missing)")
    return path


def _empty_target(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} is not empty (pass overwrite=True / --force)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def export_adapter(rec: AdapterRecord, out: str | Path, *, overwrite: bool = False) -> Path:
    """Copy the PEFT adapter (training checkpoints left out)."""
    src = _adapter_path(rec)
    out = Path(out)
    _empty_target(out, overwrite)
    shutil.copytree(
        src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "optimizer.pt", "scheduler.pt")
    )
    _provenance(rec, out, "adapter")
    return out


def merged_model(rec: AdapterRecord, *, dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the base with the adapter merged into its weights."""
    from peft import PeftModel

    from protege.models.loader import load_base

    src = _adapter_path(rec)
    model, tokenizer = load_base(rec.base_model, dtype=dtype)
    if (src / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(src)  # the one the adapter was trained with
    merged = PeftModel.from_pretrained(model, str(src)).merge_and_unload()
    merged.eval()
    return merged, tokenizer


def export_merged(rec: AdapterRecord, out: str | Path, *, dtype: Any = None, overwrite: bool = False) -> Path:
    """Base + adapter merged, saved as safetensors with the tokenizer."""
    out = Path(out)
    model, tokenizer = merged_model(rec, dtype=dtype)
    _empty_target(out, overwrite)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _provenance(rec, out, "merged")
    return out


def export_gguf(
    rec: AdapterRecord, out: str | Path, *, outtype: str = "f16", overwrite: bool = False
) -> Path:
    """The merged model as ``<out>/<task>-v<version>.<outtype>.gguf``."""
    from protege.registry.gguf_export import write_gguf

    out = Path(out)
    model, tokenizer = merged_model(rec)
    _empty_target(out, overwrite)
    path = out / f"{rec.task_id}-v{rec.version}.{outtype}.gguf"
    write_gguf(model, tokenizer, path, outtype=outtype, name=rec.ref)
    _provenance(rec, out, "gguf", file=path.name, outtype=outtype)
    return path


def export(rec: AdapterRecord, fmt: str, out: str | Path, **kw: Any) -> Path:
    if fmt == "adapter":
        return export_adapter(rec, out, overwrite=kw.get("overwrite", False))
    if fmt == "merged":
        return export_merged(rec, out, **kw)
    if fmt == "gguf":
        return export_gguf(rec, out, **kw)
    raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
