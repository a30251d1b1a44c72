"""The student under training: device and precision, the answer-only loss,
LoRA on the chosen blocks, and the base model it starts from."""

from __future__ import annotations

import os
import resource
from typing import Any

from protege.models.loader import cpu_has_bf16
from protege.train.config import TrainConfig, parse_layers

# -- hardware --------------------------------------------------------------------


def resolve_device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA requested but no GPU is available")
    return spec


def resolve_precision(spec: str, device: str) -> str:
    import torch

    if spec != "auto":
        return spec
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def auto_threads() -> int:
    """Torch threads for a CPU run: the cores not already busy.

    OpenMP threads wait for each other at every op; on a machine shared with
    other work, a thread that waits for a busy core stalls all of them (two
    threads ran one SmolLM2 step 3-4x slower than one thread here under
    load), so busy cores are left out.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if os.uname().sysname == "Darwin" else rss * 1024)


# -- the loss --------------------------------------------------------------------


def answer_loss_module():
    import torch
    import torch.nn.functional as F

    class AnswerLoss(torch.nn.Module):
        """Summed next-token loss over answer tokens, and their count.

        Runs the decoder once and sends only the positions that predict an
        answer token through ``lm_head``: the logits of prompt positions are
        never built.
        """

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model  # the PeftModel
            base = model.get_base_model()
            self.decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
            self.head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
            self.softcap = getattr(base.config, "final_logit_softcapping", None)

        def forward(self, input_ids: Any, attention_mask: Any, labels: Any, weights: Any = None) -> tuple[Any, Any]:
            """(summed loss, answer tokens); with per-token ``weights``, both weighted."""
            target = labels[:, 1:]
            keep = target != -100
            if self.decoder is None or self.head is None:  # unusual architectures: plain forward
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]
            else:
                hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                logits = self.head(hidden[:, :-1][keep])
                if self.softcap:
                    logits = torch.tanh(logits / self.softcap) * self.softcap
            if weights is None:
                return F.cross_entropy(logits.float(), target[keep], reduction="sum"), keep.sum()
            w = weights[:, 1:][keep]
            loss = F.cross_entropy(logits.float(), target[keep], reduction="none")
            return (loss * w).sum(), w.sum()

    return AnswerLoss


# -- LoRA --------------------------------------------------------------------------


def n_layers(model: Any) -> int:
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    n = getattr(cfg, "num_hidden_layers", None)
    if not n:
        raise ValueError("cannot tell how many blocks the base model has")
    return int(n)


def attach_lora(model: Any, cfg: TrainConfig) -> Any:
    """Wrap ``model`` in a PeftModel with LoRA on the configured blocks (in place)."""
    import torch
    from peft import LoraConfig, get_peft_model

    present = {
        name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)
    }
    targets = [t for t in cfg.target_modules if t in present]
    if not targets:
        raise ValueError(
            f"none of the LoRA target modules {list(cfg.target_modules)} exist in the base model"
        )
    layers = parse_layers(cfg.layers, n_layers(model))
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.resolved_alpha(),
        lora_dropout=cfg.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.seed)
    return get_peft_model(model, lora)


def lora_state(model: Any) -> dict[str, Any]:
    """Trainable (LoRA) tensors, cloned to CPU."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_lora_state(model: Any, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


# -- the base model --------------------------------------------------------------


def load_base_model(cfg: TrainConfig) -> tuple[Any, Any]:
    from protege.models.loader import load_base

    return load_base(cfg.base)


def quantized(model: Any, cfg: TrainConfig, device: str) -> Any:
    """Reload the base in 4-bit NF4 for QLoRA (CUDA + bitsandbytes)."""
    if not device.startswith("cuda"):
        raise ValueError("QLoRA (--quantization 4bit) needs a CUDA GPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError("QLoRA needs bitsandbytes: pip install 'protege[gpu]'") from None
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    source = getattr(model.config, "_name_or_path", None) or cfg.base
    qmodel = AutoModelForCausalLM.from_pretrained(
        source,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        ),
        device_map={"": device},
    )
    return prepare_model_for_kbit_training(
        qmodel, use_gradient_checkpointing=bool(cfg.gradient_checkpointing)
    )
