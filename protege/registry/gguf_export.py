"""Write a transformers Llama model as GGUF (llama.cpp / Ollama), with ``gguf.GGUFWriter``.

Follows what llama.cpp's ``convert_hf_to_gguf.py`` does for ``LlamaForCausalLM``
with a byte-level BPE tokenizer:

* tensor names through gguf's own HF -> GGUF name map;
* Q and K projections permuted from Hugging Face's rotate-half layout to the
  interleaved one llama.cpp's RoPE expects (transformers' GGUF loader undoes
  exactly this permutation on the way back in);
* 1-D tensors (norms) always f32, matrices f16 or f32;
* tokenizer as ``tokenizer.ggml.model = gpt2``: tokens, token types, merges,
  special token ids, and the chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURES = ("llama",)

# GGUF token types.
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4


def _permute(w: Any, n_head: int) -> Any:
    """HF rotate-half -> llama.cpp interleaved rows, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if theta is None and isinstance(params, dict):
        theta = params.get("rope_theta")
    if isinstance(params, dict) and params.get("rope_type", "default") not in ("default", None):
        raise ValueError(f"GGUF export does not handle rope scaling {params.get('rope_type')!r} yet")
    return float(theta if theta is not None else 10000.0)


def _tokenizer_fields(tokenizer: Any, name_hint: str) -> dict[str, Any]:
    """Vocabulary, token types and merges from a fast byte-level BPE tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("GGUF export needs a fast (tokenizers) tokenizer")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"GGUF export handles byte-level BPE tokenizers, not {model.get('type')!r}")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    for content, t in added.items():
        vocab.setdefault(content, t["id"])
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [_USER_DEFINED] * size  # holes in the id space are padding tokens
    for tok, idx in vocab.items():
        tokens[idx] = tok
        types[idx] = _NORMAL
    for t in added.values():
        types[t["id"]] = _CONTROL if t.get("special") else _USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    # llama.cpp picks its pre-tokenizer regex by name; SmolLM2 has its own
    # entry, other GPT-2-style byte-level vocabularies use "gpt-2".
    pre = "smollm" if "smollm" in name_hint.lower() or tokens[:1] == ["<|endoftext|>"] else "gpt-2"
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre}


def write_gguf(model: Any, tokenizer: Any, path: str | Path, *, outtype: str = "f16", name: str = "") -> Path:
    """Write ``model`` (a ``LlamaForCausalLM``, weights already merged) to ``path``."""
    import gguf
    import numpy as np
    import torch

    config = model.config
    arch = getattr(config, "model_type", "")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF export supports {', '.join(SUPPORTED_ARCHITECTURES)} models, not {arch!r}; "
            "export --format merged and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    if outtype not in ("f16", "f32"):
        raise ValueError(f"outtype must be f16 or f32, not {outtype!r}")
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    n_blocks = config.num_hidden_layers
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer_fields(tokenizer, name + " " + str(getattr(config, "_name_or_path", "")))

    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(name or "protege-export")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(n_blocks)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_freq_base(_rope_theta(config))
    w.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    for attr, adder in (
        ("bos_token_id", w.add_bos_token_id),
        ("eos_token_id", w.add_eos_token_id),
        ("unk_token_id", w.add_unk_token_id),
        ("pad_token_id", w.add_pad_token_id),
    ):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            adder(int(value))
    w.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        w.add_chat_template(template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    state = model.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gg_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gg_name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name!r}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        if outtype == "f16" and data.ndim > 1:
            data = data.astype(np.float16)
        else:
            data = data.astype(np.float32)
        w.add_tensor(gg_name, np.ascontiguousarray(data))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
