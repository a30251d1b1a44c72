"""A tiny Llama with a real byte-level BPE tokenizer, built in a second.

For tests and demos that need the whole model path (chat template, generate,
LoRA, save/load, export) without the cost of a real checkpoint. Register it in
a catalog with ``{"name": "tiny", "path": "<dir>", ...}`` or pass the directory
to ``load_base``.
"""

from __future__ import annotations

from pathlib import Path

from protege.models.templates import CHATML_TOOLS_PLAIN

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    'What is the weather in Paris? <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "Book a table for two at 7pm tomorrow. Search the web for the latest news about robots.",
    'Convert 100 USD to EUR. {"amount": 100, "from": "USD", "to": "EUR"} [1, 2, 3] true false null',
    "system user assistant tools function name arguments parameters type object string integer number",
    "You may call one or more functions to assist with the user query. Function signatures are inside <tools>",
    "The quick brown fox jumps over the lazy dog 0123456789 !?.,;:'\"()[]{}<>/\\-_=+*&^%$#@~`|",
]


def build_tiny(path: str | Path, *, hidden_size: int = 64, layers: int = 2, vocab_size: int = 512, seed: int = 0) -> Path:
    """Save a tiny ``LlamaForCausalLM`` and tokenizer to ``path``; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None,
    )
    tok.chat_template = CHATML_TOOLS_PLAIN
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
