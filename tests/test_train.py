from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from _smol import smol_tokenizer

from protege.train import TaskData, TrainConfig
from protege.train.data import (
    IGNORE_INDEX,
    collate,
    length_grouped_batches,
    pack_turns,
    tokenize_row,
    tokenize_rows,
)

SYSTEM = (
    "You are the booking assistant of Acme Travel. Always answer by calling exactly the tools you "
    "need, with arguments taken from the user's message. Never invent cities or dates."
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CITIES = [
    "Paris",
    "Oslo",
    "Rome",
    "Lima",
    "Tokyo",
    "Cairo",
    "Quito",
    "Berlin",
    "Madrid",
    "Dublin",
    "Seoul",
    "Lagos",
]
ASKS = [
    ("get_weather", "What's the weather in {c}?"),
    ("get_weather", "Is it raining in {c} right now?"),
    ("get_time", "What time is it in {c}?"),
    ("get_time", "Tell me the local time in {c}."),
]


def _row(i: int, fn: str, text: str, city: str) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "session_id": None,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text.format(c=city)}],
        "tools": [WEATHER, TIME],
        "tool_choice": None,
        "response_format": None,
        "completion": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"c{i}",
                    "type": "function",
                    "function": {"name": fn, "arguments": json.dumps({"city": city})},
                }
            ],
        },
        "meta": {},
    }


def make_dataset(n_train: int = 32, n_val: int = 8, seed: int = 0) -> TaskData:
    rng = random.Random(seed)
    rows = [_row(i, *rng.choice(ASKS), rng.choice(CITIES)) for i in range(n_train + n_val)]
    manifest = {
        "task_id": "weather",
        "version": "v1",
        "hash": "sha256:test",
        "output_type": "tool_call",
        "prefix": {"system": SYSTEM, "tools": [WEATHER, TIME]},
        "counts": {"train": n_train, "validation": n_val, "test": 0},
        "seed": seed,
    }
    return TaskData(manifest=manifest, train=rows[:n_train], validation=rows[n_train:])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return smol_tokenizer()


def tiny_model(tok, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    # A random 64-wide model with the usual 0.02 init cannot make any token
    # likely through its frozen (tied) output layer; wider embeddings give the
    # adapter room to learn within a few steps.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.3)
    return model.eval()


def fast_config(**kw: Any) -> TrainConfig:
    base = {
        "base": "tiny-llama",
        "epochs": 3,
        "lr": 1e-2,
        "batch_size": 8,
        "rank": 8,
        "layers": "all",
        "eval_every": 4,
        "patience": 0,
        "seed": 0,
        # one thread: the tiny matrices gain nothing from two, and lose a lot on a busy machine
        "threads": 1,
    }
    base.update(kw)
    return TrainConfig(**base)


# -- data ------------------------------------------------------------------------


def test_only_answer_tokens_carry_loss(tok) -> None:
    row = make_dataset(4, 0).train[0]
    ex = tokenize_row(row, tok)
    labels = ex.labels()
    assert labels[: ex.n_prompt] == [IGNORE_INDEX] * ex.n_prompt
    answer = tok.decode([t for t in labels if t != IGNORE_INDEX])
    call = row["completion"]["tool_calls"][0]["function"]
    assert answer == (
        f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {call["arguments"]}}}\n</tool_call><|im_end|>'
    )
    prompt = tok.decode(ex.input_ids[: ex.n_prompt])
    assert prompt.endswith("<|im_start|>assistant\n") and SYSTEM in prompt

    batch = collate([ex, tokenize_row(make_dataset(4, 0).train[1], tok, drop_prefix=False)], tok.pad_token_id)
    shorter = int(batch["attention_mask"].sum(1).min())
    row_i = int(batch["attention_mask"].sum(1).argmin())
    assert (batch["labels"][row_i, shorter:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][row_i, shorter:] == 0).all()


def test_prefix_dropping_removes_prefix(tok) -> None:
    ds = make_dataset(8, 0)
    full, rep_full = tokenize_rows(ds.train, tok, prefix=ds.manifest["prefix"], drop_prefix=False)
    short, rep_short = tokenize_rows(ds.train, tok, prefix=ds.manifest["prefix"], drop_prefix=True)
    for f, s in zip(full, short, strict=True):
        text = tok.decode(s.input_ids[: s.n_prompt])
        assert SYSTEM not in text and "get_weather" not in text and "<tools>" not in text
        assert f.input_ids[f.n_prompt :] == s.input_ids[s.n_prompt :]  # same answer
    assert rep_short.answer_tokens == rep_full.answer_tokens
    assert rep_short.prompt_tokens * 3 < rep_full.prompt_tokens


def _conversation(tag: str, cities: list[str]) -> list[dict[str, Any]]:
    """An agent conversation: one captured call per step, each sending the
    whole history (earlier calls and their tool results) back."""
    rows, history = [], [{"role": "system", "content": SYSTEM}]
    for k, city in enumerate(cities):
        history = history + [{"role": "user", "content": f"{tag}: weather in {city}?"}]
        call = {"role": "assistant", "content": None, "tool_calls": [{"id": f"{tag}{k}", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]}
        rows.append({"id": f"{tag}-{k}", "messages": list(history), "tools": [WEATHER], "completion": call})
        history = history + [call, {"role": "tool", "tool_call_id": f"{tag}{k}", "content": "sunny"}]
    return rows


def test_pack_turns_folds_earlier_calls_into_the_conversation(tok) -> None:
    rows = _conversation("a", ["Paris", "Rome", "Oslo"]) + _conversation("b", ["Lima"])
    examples, _ = tokenize_rows(rows, tok)
    packed, folded = pack_turns(examples)
    assert folded == 2 and len(packed) == 2
    host = max(packed, key=lambda e: len(e.input_ids))
    assert host.row_id == "a-2" and len(host.spans) == 2
    # Every answer is supervised once, after exactly the context it had alone.
    assert sorted(n for e in packed for n in e.answer_lengths()) == sorted(e.n_answer for e in examples)
    assert sum(e.n_answer for e in packed) == sum(e.n_answer for e in examples)
    labels = host.labels()
    for ex in examples[:2]:
        assert labels[ex.n_prompt : len(ex.input_ids)] == ex.input_ids[ex.n_prompt :]
        assert host.input_ids[: len(ex.input_ids)] == ex.input_ids
    supervised = tok.decode([t for t in labels if t != IGNORE_INDEX])
    assert all(c in supervised for c in ("Paris", "Rome", "Oslo"))
    assert "weather in" not in supervised  # prompts and tool results carry no loss
    # A conversation that diverges (another answer at step 2) is not folded.
    other = _conversation("a", ["Paris", "Berlin"])
    ex2, _ = tokenize_rows(rows[:3] + other[1:], tok)
    _, folded2 = pack_turns(ex2)
    assert folded2 == 2  # a-0 and a-1 into a-2; the Berlin call only shares the prompt


def test_the_deciding_tokens_are_the_call_through_its_name_or_a_texts_first(tok) -> None:
    from protege.train.data import decision_length

    rows = _conversation("a", ["Paris", "Rome"])
    rows[1]["completion"] = {"role": "assistant", "content": "Sunny in both.", "tool_calls": None}
    examples, _ = tokenize_rows(rows, tok)
    call, text = examples
    (s, e), = call.heads
    assert s == call.n_prompt
    # Through the name, give or take the token that joins its closing quote to what follows.
    assert tok.decode(call.input_ids[s:e]).startswith('<tool_call>\n{"name": "get_weather')
    assert "arguments" not in tok.decode(call.input_ids[s:e])
    assert text.heads == [(text.n_prompt, text.n_prompt + 1)]
    assert decision_length("", 0, tok) == 0
    # Folded into the conversation, each answer keeps its deciding tokens where they were.
    (host,), _ = pack_turns(examples)
    assert sorted(host.heads) == sorted(call.heads + text.heads)
    w = host.weights(4.0)
    assert [i for i, x in enumerate(w) if x == 4.0] == [i for a, b in host.heads for i in range(a, b)]
    assert host.weighted_answer(4.0) == host.n_answer + 3 * sum(b - a for a, b in host.heads)
    assert "weights" not in collate([host], tok.pad_token_id)


def test_decision_weight_weighs_the_loss_of_the_deciding_tokens(tok) -> None:
    import torch

    from protege.train.model import answer_loss_module, attach_lora

    peft_model = attach_lora(tiny_model(tok), fast_config())
    examples = [tokenize_row(r, tok) for r in make_dataset(4, 0).train]
    loss = answer_loss_module()(peft_model)
    with torch.no_grad():
        plain, n = loss(**collate(examples, tok.pad_token_id))
        same, n1 = loss(**collate(examples, tok.pad_token_id, 1.0 + 1e-9))
        heavy, n4 = loss(**collate(examples, tok.pad_token_id, 4.0))
        batch = collate(examples, tok.pad_token_id)
        batch["labels"] = batch["labels"].clone()
        for i, e in enumerate(examples):  # the deciding tokens' loss alone
            keep = torch.full_like(batch["labels"][i], IGNORE_INDEX)
            for a, b in e.heads:
                keep[a:b] = batch["labels"][i, a:b]
            batch["labels"][i] = keep
        head, nh = loss(**batch)
    assert torch.allclose(same, plain, atol=1e-4) and float(n1) == pytest.approx(float(n))
    assert torch.allclose(heavy, plain + 3 * head, atol=1e-3)
    assert float(n4) == pytest.approx(float(n) + 3 * float(nh))
    assert float(n4) == pytest.approx(sum(e.weighted_answer(4.0) for e in examples))


def test_overlong_examples_are_skipped_not_cut(tok) -> None:
    ds = make_dataset(6, 0)
    kept, rep = tokenize_rows(ds.train, tok, max_length=40)
    assert kept == [] and rep.skipped_too_long == 6


def test_length_grouped_batches() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(10, 400) for _ in range(203)]
    a = length_grouped_batches(lengths, 8, seed=3, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(203))
    assert a == length_grouped_batches(lengths, 8, seed=3, epoch=0)
    assert a != length_grouped_batches(lengths, 8, seed=3, epoch=1)

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    idx = list(range(203))
    rng.shuffle(idx)
    naive = [idx[j : j + 8] for j in range(0, 203, 8)]
    assert padded(a) < 0.8 * padded(naive)


def test_answer_loss_matches_full_forward_loss(tok) -> None:
    import torch

    from protege.train.model import answer_loss_module, attach_lora

    peft_model = attach_lora(tiny_model(tok), fast_config())
    batch = collate([tokenize_row(r, tok) for r in make_dataset(4, 0).train], tok.pad_token_id)
    with torch.no_grad():
        s, c = answer_loss_module()(peft_model)(**batch)
        ref = peft_model(**batch).loss
    assert int(c) == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert torch.allclose(s / c, ref, atol=1e-5)


def _base_snapshot(model) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_learns_and_saves_a_loadable_adapter(tok, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel

    from protege.train import train_adapter

    model = tiny_model(tok)
    before = _base_snapshot(model)
    ds = make_dataset(32, 8)
    res = train_adapter(dataset=ds, config=fast_config(), model=model, tokenizer=tok)
    m = res.metrics

    # the loss fell, on train and on held-out data
    train = [v for _, v in m["train_loss_curve"]]
    assert sum(train[-3:]) / 3 < 0.6 * sum(train[:3]) / 3
    val = [v for _, v in m["val_loss_curve"]]
    assert min(val) < 0.85 * val[0]
    assert m["answer_tokens"] > 0 and m["answer_tokens_per_s"] > 0 and m["peak_rss_bytes"] > 0

    # base weights untouched; every LoRA B matrix moved away from its zero init
    after = model.state_dict()
    for k, v in before.items():
        k2 = k if k in after else k.replace(".weight", ".base_layer.weight")
        assert torch.equal(after[k2], v), k
    lora_b = {k: v for k, v in after.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())

    # the adapter directory is complete and describes the run
    d = res.adapter_dir
    assert d == Path(tmp_path / "home/artifacts/adapters/weather/1")
    assert (d / "adapter_model.safetensors").exists() and (d / "tokenizer.json").exists()
    assert not (d / "checkpoint.pt").exists()
    meta = json.loads((d / "protege_adapter.json").read_text())
    assert meta["base_model"] == "tiny-llama" and meta["dataset"]["hash"] == "sha256:test"
    assert meta["drop_prefix"] is True and meta["prefix"]["system"] == SYSTEM
    assert meta["config"]["rank"] == 8 and meta["config"]["lora_layers"] is None
    assert meta["metrics"]["best_val_loss"] == pytest.approx(min(val), abs=1e-4)
    assert meta["status"] == "candidate" and meta["started_at"] <= meta["finished_at"]

    # reload onto a fresh copy of the base: same outputs as the trained model
    loaded = PeftModel.from_pretrained(tiny_model(tok), d).eval()
    model.eval()
    ids = torch.tensor(
        [tokenize_row(ds.validation[0], tok, prefix=ds.manifest["prefix"], drop_prefix=True).input_ids]
    )
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)
        assert not torch.allclose(tiny_model(tok)(ids).logits, model(ids).logits, atol=1e-3)

    # a second run gets the next version
    res2 = train_adapter(dataset=ds, config=fast_config(max_steps=1), model=tiny_model(tok), tokenizer=tok)
    assert res2.version == 2


def test_top_layers_only(tok) -> None:
    from protege.train import train_adapter

    model = tiny_model(tok)
    res = train_adapter(
        dataset=make_dataset(8, 0), config=fast_config(layers="top1", max_steps=2), model=model, tokenizer=tok
    )
    names = [k for k in model.state_dict() if "lora_A" in k]
    assert names and all(".layers.1." in k for k in names)
    assert res.config["lora_layers"] == [1]


def test_token_budget_caps_the_steps(tok) -> None:
    from protege.train import train_adapter

    ds = make_dataset(40, 0)
    full = train_adapter(dataset=ds, config=fast_config(batch_size=4, epochs=1), model=tiny_model(tok), tokenizer=tok)
    per_step = full.metrics["tokens"] / full.metrics["steps"]
    capped = train_adapter(dataset=ds, config=fast_config(batch_size=4, epochs=1, max_tokens=int(3 * per_step)),
                           model=tiny_model(tok), tokenizer=tok)
    assert full.metrics["steps"] > 5 and 2 <= capped.metrics["steps"] <= 4


def test_time_budget_shortens_the_schedule(tok) -> None:
    from protege.train import train_adapter
    from protege.train.trainer import _LinearSchedule, budget_steps

    assert budget_steps(4, 2.0, 100, 10.0) == 20  # 0.5 s a step: 20 fit in 10 s
    assert budget_steps(4, 2.0, 12, 10.0) == 12 and budget_steps(4, 40.0, 100, 10.0) == 4
    # A slow start (2 s a step) then 0.25 s a step: the time left goes at the recent pace.
    assert budget_steps(4, 8.0, 100, 10.0, pace_s=0.25) == 12
    sched = _LinearSchedule(100, 10)
    sched.total = 20
    assert sched(19) > 0 and sched(20) == 0.0  # the decay ends at the shortened total

    ds = make_dataset(40, 0)
    # A budget far below one step's time: the run stops as soon as it is timed.
    res = train_adapter(dataset=ds, config=fast_config(batch_size=4, epochs=3, max_seconds=1e-6),
                        model=tiny_model(tok), tokenizer=tok)
    assert res.metrics["steps"] == res.metrics["total_steps"] == 3
    assert res.metrics["stop_reason"] == "time_budget"


class Stop(Exception):
    pass


def test_resume_matches_uninterrupted_run(tok) -> None:
    import torch

    from protege.train import train_adapter
    from protege.train.runs import resumable_run

    ds = make_dataset(24, 8)
    cfg = fast_config(max_steps=7, eval_every=3, checkpoint_every=2, precision="fp32")

    straight = tiny_model(tok)
    ref = train_adapter("weather", dataset=ds, config=cfg, model=straight, tokenizer=tok)

    def interrupt(state) -> None:
        if state.step == 5:
            raise Stop

    with pytest.raises(Stop):
        train_adapter(
            "weather", dataset=ds, config=cfg, model=tiny_model(tok), tokenizer=tok, on_step=interrupt
        )
    run = resumable_run("weather")
    assert run is not None and run.name == "2"

    resumed = tiny_model(tok)
    # a different config on the command line does not change a resumed run
    res = train_adapter(
        "weather", dataset=ds, config=fast_config(lr=0.5), model=resumed, tokenizer=tok, resume=True
    )
    assert res.adapter_dir == run and res.metrics["steps"] == 7
    assert [s for s, _ in res.metrics["train_loss_curve"]] == list(range(1, 8))
    assert [v for _, v in res.metrics["train_loss_curve"]] == pytest.approx(
        [v for _, v in ref.metrics["train_loss_curve"]], abs=1e-4
    )
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        if "lora_" in k:
            assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert resumable_run("weather") is None
    with pytest.raises(ValueError, match="no unfinished training run"):
        train_adapter("weather", dataset=ds, config=cfg, model=tiny_model(tok), tokenizer=tok, resume=True)


def test_ctrl_c_leaves_a_resumable_checkpoint(tok) -> None:
    from protege.train import train_adapter
    from protege.train.trainer import TrainingInterrupted

    def ctrl_c(state) -> None:
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        train_adapter(
            "weather",
            dataset=make_dataset(8, 0),
            config=fast_config(),
            model=tiny_model(tok),
            tokenizer=tok,
            on_step=ctrl_c,
        )
    assert (info.value.run_dir / "checkpoint.pt").exists() and info.value.step == 1


def test_early_stopping_stops(tok) -> None:
    from protege.train import train_adapter

    # an improvement threshold no run can meet: stop after `patience` evaluations
    cfg = fast_config(epochs=10, eval_every=1, patience=2, min_delta=100.0)
    res = train_adapter(dataset=make_dataset(8, 4), config=cfg, model=tiny_model(tok), tokenizer=tok)
    assert res.stopped_early and res.metrics["stop_reason"] == "early_stopping"
    assert res.metrics["steps"] == 3 < res.metrics["total_steps"] == 10
    assert res.metrics["best_step"] == 1 and len(res.metrics["val_loss_curve"]) == 3


# -- augmentation ----------------------------------------------------------------


def paraphrasing_teacher() -> Any:
    """Paraphrases by rewording, answers with a tool call."""
    from protege.testing import FakeTeacher

    def reply(req: dict[str, Any]) -> Any:
        msgs = req["messages"]
        if msgs[0]["content"].startswith("Rewrite"):
            return f"Could you tell me: {msgs[1]['content']} (#{len(teacher.requests)})"
        city = next(c for c in CITIES if c in msgs[-1]["content"])
        call = {"id": "x", "type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
        return {"content": None, "tool_calls": [call]}

    teacher = FakeTeacher(reply)
    return teacher


def test_augmentation_marks_synthetic_rows(tok) -> None:
    from protege.train import train_adapter
    from protege.train.augment import AugmentConfig, augment_rows

    ds = make_dataset(4, 2)
    fake = paraphrasing_teacher()
    new = augment_rows(ds.train, fake, AugmentConfig(model="teacher", target=10))
    assert len(new) == 6 and all(r["meta"]["synthetic"] for r in new)
    assert {r["meta"]["source_id"] for r in new} <= {r["id"] for r in ds.train}
    for r in new:
        assert r["messages"][-1]["content"].startswith("Could you tell me:")
        assert json.loads(r["completion"]["tool_calls"][0]["function"]["arguments"])["city"] in CITIES
    answers = [c for c in fake.requests if "tools" in c]
    assert answers and all(c["tools"] == [WEATHER, TIME] for c in answers)

    res = train_adapter(
        dataset=ds,
        config=fast_config(max_steps=2),
        model=tiny_model(tok),
        tokenizer=tok,
        augment=AugmentConfig(model="teacher", target=10),
        teacher=paraphrasing_teacher(),
    )
    assert res.metrics["train_examples"] == 10 and res.metrics["synthetic_examples"] == 6
    assert len((res.adapter_dir / "synthetic.jsonl").read_text().splitlines()) == 6


# -- CLI -------------------------------------------------------------------------


def _write_dataset(home: Path, ds: TaskData) -> None:
    d = home / "artifacts/datasets/weather/v1"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps(ds.manifest))
    for split in ("train", "validation"):
        rows = getattr(ds, split)
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test.jsonl").write_text("")


def test_cli_errors_are_one_line(tok, monkeypatch) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli

    r = CliRunner().invoke(cli, ["train", "no-such-task"])
    assert r.exit_code == 2 and "no-such-task" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_trains_and_reports(tok, monkeypatch, _isolated_home: Path) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli
    from protege.train import trainer

    _write_dataset(_isolated_home, make_dataset(16, 4))
    monkeypatch.setattr(trainer, "load_base_model", lambda cfg: (tiny_model(tok), tok))
    r = CliRunner().invoke(
        cli,
        ["train", "weather", "--max-steps", "3", "--rank", "4", "--layers", "all", "--lr", "0.01",
         "--decision-weight", "2", "--max-tokens", "100000", "--max-seconds", "600", "--json"],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["version"] == 1 and out["metrics"]["steps"] == 3
    from protege.database import open_store
    from protege.registry import Registry

    store = open_store()
    rec = Registry(store).get("weather", 1)
    store.close()
    assert rec is not None and rec.id == out["registered"] and rec.status == "candidate"
    assert rec.path == out["adapter_dir"] and rec.dataset_hash == "sha256:test"
    meta = json.loads((Path(out["adapter_dir"]) / "protege_adapter.json").read_text())
    assert meta["config"]["rank"] == 4 and meta["config"]["lr"] == 0.01
    assert meta["config"]["decision_weight"] == 2.0 and meta["config"]["max_tokens"] == 100000
    assert meta["config"]["max_seconds"] == 600.0


@pytest.mark.parametrize("flag, value", [("--decision-weight", "0"), ("--max-tokens", "0"),
                                         ("--max-seconds", "-5")])
def test_cli_budget_and_weight_out_of_range_are_one_line(flag: str, value: str, _isolated_home: Path) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli

    _write_dataset(_isolated_home, make_dataset(4, 0))
    r = CliRunner().invoke(cli, ["train", "weather", flag, value, "--no-register"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "must be" in r.output


# -- real model ------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_trains_a_few_steps() -> None:
    from protege.models.loader import load_base
    from protege.train import train_adapter

    model, tokenizer = load_base("smollm2-135m-instruct")
    res = train_adapter(
        dataset=make_dataset(24, 8),
        config=TrainConfig(max_steps=6, eval_every=3, batch_size=4),
        model=model,
        tokenizer=tokenizer,
    )
    val = [v for _, v in res.metrics["val_loss_curve"]]
    assert val[-1] < val[0]
    assert res.config["lora_layers"] == list(range(22, 30))


def test_cli_unknown_model_is_one_line(_isolated_home: Path) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli

    _write_dataset(_isolated_home, make_dataset(4, 0))
    r = CliRunner().invoke(cli, ["train", "weather", "--base", "no-such/model-xyz", "--no-register"])
    assert r.exit_code == 2 and "no-such/model-xyz" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (_isolated_home / "artifacts/adapters/weather").exists()  # no empty version left behind


def test_train_options_are_declared_once_in_the_config() -> None:
    import dataclasses

    from protege.cli.train import train as train_cmd

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    params = {p.name: p for p in train_cmd.params}
    for name in ("base", "epochs", "max_steps", "max_tokens", "max_seconds", "lr", "rank", "layers", "batch_size",
                 "decision_weight", "precision", "seed", "threads"):
        assert params[name].help.startswith(helps[name].rstrip(".")), name
        assert params[name].default is None  # the config's default applies
    assert "(default 16)" in params["rank"].help and params["rank"].type.name == "integer"
    assert params["lr"].type.name == "float" and params["max_steps"].type.name == "integer"

