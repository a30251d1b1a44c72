from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from protege.registry import AdapterRecord, Registry, RegistryError, adapter_dir


def _reg(registry: Registry, task: str = "weather", **kw) -> AdapterRecord:
    return registry.register(
        task,
        base_model="smollm2-135m-instruct",
        dataset_id=f"{task}/1",
        dataset_hash="abc123",
        config={"lora": {"r": 16}, "lr": 2e-4},
        metrics={"val_loss": 0.5},
        **kw,
    )


def test_register_versions_and_reads(store):
    reg = Registry(store)
    a = _reg(reg)
    b = _reg(reg)
    other = _reg(reg, "search")
    assert (a.version, b.version, other.version) == (1, 2, 1)
    assert a.status == "candidate" and a.ref == "weather:v1"
    assert a.path == str(adapter_dir("weather", 1))
    got = reg.get(a.id)
    assert got is not None and got.config == {"lora": {"r": 16}, "lr": 2e-4} and got.metrics == {"val_loss": 0.5}
    assert reg.get("weather").id == b.id  # latest version
    assert reg.get("weather", 1).id == a.id
    assert reg.get("weather:v2").id == b.id
    assert reg.get(a.id[:20]).id == a.id  # unique prefix
    assert reg.get("nope") is None
    assert [r.id for r in reg.list("weather")] == [b.id, a.id]
    assert {r.id for r in reg.list()} == {a.id, b.id, other.id}
    with pytest.raises(RegistryError, match="already registered"):
        _reg(reg, version=2)


def test_transitions_history_and_single_promoted(store):
    reg = Registry(store)
    v1, v2, v3 = _reg(reg), _reg(reg), _reg(reg)
    reg.set_status(v1.id, "shadow", "gate passed")
    reg.promote(v1.id, "canary clean")
    assert reg.promoted("weather").id == v1.id
    # Promoting v2 retires v1 in the same transaction.
    reg.promote(v2.id, "better on eval")
    assert reg.promoted("weather").id == v2.id
    assert reg.get(v1.id).status == "retired"
    assert reg.get(v1.id).status_reason == "superseded by weather:v2"
    assert [r.id for r in reg.list("weather", status="retired")] == [v1.id]
    hist = [(e.from_status, e.to_status, e.reason) for e in reg.history(v1.id)]
    assert hist == [
        (None, "candidate", "registered"),
        ("candidate", "shadow", "gate passed"),
        ("shadow", "promoted", "canary clean"),
        ("promoted", "retired", "superseded by weather:v2"),
    ]
    # Illegal moves are refused and leave nothing behind.
    with pytest.raises(RegistryError, match="already promoted"):
        reg.promote(v2.id)
    with pytest.raises(RegistryError, match="unknown status"):
        reg.set_status(v3.id, "live")
    reg.retire(v3.id, "never mind")
    with pytest.raises(RegistryError, match="can become"):
        reg.shadow(v3.id)
    assert len(reg.history(v3.id)) == 2
    assert reg.promoted_all() == {"weather": reg.get(v2.id)}
    assert reg.promoted("search") is None


def test_database_refuses_two_promoted(store):
    """The partial unique index holds even against a buggy direct write."""
    reg = Registry(store)
    a, b = _reg(reg), _reg(reg)
    reg.promote(a.id)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE adapters SET status = 'promoted' WHERE id = :i"), {"i": b.id})


def test_rollback_repromotes_previous(store):
    reg = Registry(store)
    v1, v2, v3 = _reg(reg), _reg(reg), _reg(reg)
    with pytest.raises(RegistryError, match="no earlier promoted"):
        reg.rollback("weather")
    reg.promote(v1.id)
    reg.promote(v2.id)
    reg.promote(v3.id)
    back = reg.rollback("weather", "error rate up")
    assert back.id == v2.id and reg.promoted("weather").id == v2.id
    assert reg.get(v3.id).status == "retired"
    assert "error rate up" in reg.get(v3.id).status_reason
    # A second rollback goes one further back (v2 was promoted after v1).
    assert reg.rollback("weather").id == v1.id
    task_events = reg.task_history("weather")
    assert [e.to_status for e in task_events].count("promoted") == 5
    assert reg.changed_at() >= reg.get(v1.id).updated_at


def test_rollback_when_nothing_is_promoted(store):
    reg = Registry(store)
    v1 = _reg(reg)
    reg.promote(v1.id)
    reg.retire(v1.id, "bad outputs")
    assert reg.promoted("weather") is None
    assert reg.rollback("weather").id == v1.id


def test_update_metrics_merges(store):
    reg = Registry(store)
    a = _reg(reg)
    reg.update_metrics(a.id, {"exact_call_match": 0.9})
    assert reg.get(a.id).metrics == {"val_loss": 0.5, "exact_call_match": 0.9}


def test_concurrent_promotions_leave_one_promoted(db_url):
    from protege.database import open_store

    store = open_store(db_url)
    reg = Registry(store)
    recs = [_reg(reg) for _ in range(4)]
    errors: list[Exception] = []

    def go(rec: AdapterRecord) -> None:
        try:
            Registry(open_store(db_url)).promote(rec.id)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(reg.list("weather", status="promoted")) == 1
    assert len(reg.list("weather", status="retired")) == 3


# -- CLI ------------------------------------------------------------------------


def test_cli_list_show_promote_rollback(tmp_path: Path):
    from click.testing import CliRunner

    from protege.cli.main import cli
    from protege.database import open_store

    url = f"sqlite:///{tmp_path / 'p.db'}"
    reg = Registry(open_store(url))
    v1, v2 = _reg(reg), _reg(reg)
    run = CliRunner().invoke
    out = run(cli, ["adapters", "promote", v1.id, "--db", url, "--reason", "first"])
    assert out.exit_code == 0, out.output
    out = run(cli, ["adapters", "promote", "weather:v2", "--db", url])
    assert out.exit_code == 0, out.output
    out = run(cli, ["adapters", "list", "--db", url, "--json"])
    rows = json.loads(out.output)
    assert {r["ref"]: r["status"] for r in rows} == {"weather:v1": "retired", "weather:v2": "promoted"}
    out = run(cli, ["adapters", "list", "--db", url])
    assert out.exit_code == 0 and "weather" in out.output and "promoted" in out.output
    out = run(cli, ["adapters", "rollback", "weather", "--db", url, "--reason", "regression"])
    assert out.exit_code == 0, out.output
    assert reg.promoted("weather").id == v1.id
    out = run(cli, ["adapters", "show", v2.id, "--db", url, "--json"])
    shown = json.loads(out.output)
    assert shown["status"] == "retired" and [e["to_status"] for e in shown["history"]] == [
        "candidate", "promoted", "retired",
    ]
    out = run(cli, ["adapters", "retire", "missing-id", "--db", url])
    assert out.exit_code == 2 and "no adapter" in out.output and "Traceback" not in out.output


# -- export ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Llama base and a LoRA adapter on it with non-zero weights."""
    from peft import LoraConfig, get_peft_model

    from protege.models.loader import load_base
    from protege.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's per-test env
        mp.setenv("HF_HUB_OFFLINE", "1")
        base = build_tiny(root / "base")
        model, _ = load_base(str(base))
        cfg = LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
        get_peft_model(model, cfg).save_pretrained(root / "adapter")
    return base, root / "adapter"


def _registered(store, tiny_adapter) -> AdapterRecord:
    base, adapter = tiny_adapter
    return Registry(store).register("weather", base_model=str(base), path=adapter, dataset_id="weather/1")


def _logits(model, tokenizer, text: str):
    import torch

    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(ids).logits


def test_export_adapter_copies_peft_files(tmp_path: Path, tiny_adapter):
    from protege.database import open_store
    from protege.registry.export import ExportError, export

    rec = _registered(open_store(f"sqlite:///{tmp_path / 'p.db'}"), tiny_adapter)
    out = export(rec, "adapter", tmp_path / "out")
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    info = json.loads((out / "protege-adapter.json").read_text())
    assert info["ref"] == "weather:v1" and info["format"] == "adapter"
    with pytest.raises(ExportError, match="not empty"):
        export(rec, "adapter", tmp_path / "out")


def test_export_merged_equals_base_plus_adapter(tmp_path: Path, tiny_adapter):
    import torch
    from peft import PeftModel

    from protege.database import open_store
    from protege.models.loader import load_base
    from protege.registry.export import export

    base, adapter = tiny_adapter
    rec = _registered(open_store(f"sqlite:///{tmp_path / 'p.db'}"), tiny_adapter)
    out = export(rec, "merged", tmp_path / "merged")
    merged, tok = load_base(str(out))
    assert not any("lora" in k for k in merged.state_dict())
    model, _ = load_base(str(base))
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    text = 'What is the weather in Paris? {"city": "Paris"}'
    expected = _logits(peft_model, tok, text)
    assert torch.allclose(_logits(merged, tok, text), expected, atol=1e-5)
    # The adapter really changes the model, so the comparison above means something.
    plain, _ = load_base(str(base))
    assert not torch.allclose(_logits(plain, tok, text), expected, atol=1e-3)


@pytest.mark.parametrize("outtype,atol", [("f32", 1e-5), ("f16", 5e-3)])
def test_export_gguf_loads_back_in_transformers(tmp_path: Path, tiny_adapter, outtype: str, atol: float):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.database import open_store
    from protege.registry.export import export, merged_model

    rec = _registered(open_store(f"sqlite:///{tmp_path / 'p.db'}"), tiny_adapter)
    path = export(rec, "gguf", tmp_path / "gguf", outtype=outtype)
    assert path.name == f"weather-v1.{outtype}.gguf"
    back = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    back_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    merged, tok = merged_model(rec)
    text = 'Book a table: <tool_call>\n{"name": "book", "arguments": {"n": 2}}\n</tool_call>'
    assert back_tok(text)["input_ids"] == tok(text)["input_ids"]
    assert torch.allclose(_logits(back, tok, text), _logits(merged, tok, text), atol=atol)


def test_cli_export_and_bad_format_errors(tmp_path: Path, tiny_adapter):
    from click.testing import CliRunner

    from protege.cli.main import cli
    from protege.database import open_store

    url = f"sqlite:///{tmp_path / 'p.db'}"
    rec = _registered(open_store(url), tiny_adapter)
    run = CliRunner().invoke
    out = run(cli, ["adapters", "export", rec.id, "--format", "adapter", "--out", str(tmp_path / "a"), "--db", url])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "a" / "adapter_config.json").exists()
    # No adapter files at the registered path: one readable line.
    broken = Registry(open_store(url)).register("other", base_model="x", path=tmp_path / "nothing")
    out = run(cli, ["adapters", "export", broken.id, "--out", str(tmp_path / "b"), "--db", url])
    assert out.exit_code == 2 and "adapter_config.json missing" in out.output


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_export_gguf_of_smollm2_with_adapter(tmp_path: Path):
    """The real embedded model: LoRA on SmolLM2-135M, exported as GGUF, read back."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.database import open_store
    from protege.models.loader import load_base
    from protege.registry.export import export, merged_model

    model, _ = load_base("smollm2-135m-instruct")
    cfg = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(tmp_path / "adapter")
    rec = Registry(open_store(f"sqlite:///{tmp_path / 'p.db'}")).register(
        "weather", base_model="smollm2-135m-instruct", path=tmp_path / "adapter"
    )
    path = export(rec, "gguf", tmp_path / "gguf", outtype="f16")
    back = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    back_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    merged, tok = merged_model(rec)
    text = 'What is the weather in Paris? <tool_call>\n{"name": "get_weather"}</tool_call>'
    assert back_tok(text)["input_ids"] == tok(text)["input_ids"]
    assert back_tok.chat_template == tok.chat_template
    a, b = _logits(back, tok, text), _logits(merged, tok, text)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - b).abs().max().item() < 0.1 * a.abs().max().item()
