"""The teacher's former name, "upstream", still works wherever users wrote it:
CLI flags, environment variables, GatewayConfig keywords and attributes, the
protege.testing fixture."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from protege.cli.main import cli
from protege.cli.serve_cmd import serve
from protege.cli.train import train
from protege.config import teacher_url
from protege.gateway.config import GatewayConfig
from protege.teacher import HttpTeacher


@pytest.fixture(autouse=True)
def _no_teacher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROTEGE_TEACHER", "PROTEGE_UPSTREAM", "PROTEGE_UPSTREAM_URL"):
        monkeypatch.delenv(name, raising=False)


def test_serve_accepts_the_old_flags_and_hides_them() -> None:
    ctx = serve.make_context("serve", ["--upstream", "http://old.test/v1", "--upstream-key-env", "K"])
    assert ctx.params["teacher"] == "http://old.test/v1" and ctx.params["teacher_key_env"] == "K"
    ctx = serve.make_context("serve", ["--teacher", "http://new.test/v1", "--teacher-key-env", "K2"])
    assert ctx.params["teacher"] == "http://new.test/v1" and ctx.params["teacher_key_env"] == "K2"
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--teacher URL" in help_text and "--teacher-key-env" in help_text
    assert "--upstream" not in help_text


def test_serve_without_a_teacher_names_the_new_flag() -> None:
    out = CliRunner().invoke(cli, ["serve"])
    assert out.exit_code == 2 and "--teacher" in out.output and "--upstream" not in out.output


def test_train_accepts_the_old_flags_and_hides_them() -> None:
    ctx = train.make_context("train", ["t", "--upstream-url", "http://old.test/v1", "--upstream-model", "m"])
    assert ctx.params["teacher_url"] == "http://old.test/v1" and ctx.params["teacher_model"] == "m"
    help_text = CliRunner().invoke(cli, ["train", "--help"]).output
    assert "--teacher-url" in help_text and "--teacher-model" in help_text and "--upstream" not in help_text


@pytest.mark.parametrize(("env", "expected"), [
    ({"PROTEGE_UPSTREAM": "http://old.test/v1"}, "http://old.test/v1"),
    ({"PROTEGE_TEACHER": "http://new.test/v1", "PROTEGE_UPSTREAM": "http://old.test/v1"}, "http://new.test/v1"),
    ({}, "https://api.openai.com/v1"),
])
def test_teacher_url_reads_the_old_variable_when_the_new_one_is_unset(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert teacher_url() == expected
    assert GatewayConfig().teacher == expected
    assert str(HttpTeacher.from_env().client.base_url).rstrip("/") == expected
    if env:
        assert serve.make_context("serve", []).params["teacher"] == expected


def test_train_reads_its_old_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTEGE_UPSTREAM_URL", "http://old-train.test/v1")
    assert train.make_context("train", ["t"]).params["teacher_url"] == "http://old-train.test/v1"
    monkeypatch.setenv("PROTEGE_TEACHER", "http://new.test/v1")
    assert train.make_context("train", ["t"]).params["teacher_url"] == "http://new.test/v1"


def test_gateway_config_takes_the_old_keywords() -> None:
    old = {"upstream": "http://old.test/v1", "upstream_key_env": "KEY", "port": 9}
    with pytest.warns(DeprecationWarning, match="teacher"):
        cfg = GatewayConfig(**old)
    assert (cfg.teacher, cfg.teacher_key_env, cfg.port) == ("http://old.test/v1", "KEY", 9)
    assert cfg == GatewayConfig(teacher="http://old.test/v1", teacher_key_env="KEY", port=9)
    assert "upstream" not in {f.name for f in dataclasses.fields(cfg)}
    assert dataclasses.replace(cfg, port=10).teacher == "http://old.test/v1"
    with pytest.warns(DeprecationWarning):
        assert cfg.upstream == "http://old.test/v1"
    with pytest.warns(DeprecationWarning):
        cfg.upstream = "http://moved.test/v1"
    assert cfg.teacher_base == "http://moved.test/v1"
    with pytest.raises(TypeError, match="not also upstream"):
        GatewayConfig(upstream="http://a/v1", teacher="http://b/v1")


def test_the_fake_teacher_server_under_its_old_name() -> None:
    import protege.testing

    with pytest.warns(DeprecationWarning, match="FakeTeacherServerThread"):
        old = protege.testing.FakeUpstreamThread  # type: ignore[attr-defined]
    assert old is protege.testing.FakeTeacherServerThread
    assert "FakeUpstreamThread" not in protege.testing.__all__
    with pytest.raises(AttributeError):
        protege.testing.NoSuchFixture  # type: ignore[attr-defined]  # noqa: B018


def test_the_student_engines_under_their_old_package_name() -> None:
    import importlib
    import sys

    import protege.engines
    import protege.engines.engine
    import protege.engines.vllm

    for name in [m for m in sys.modules if m == "protege.serve" or m.startswith("protege.serve.")]:
        del sys.modules[name]  # import it afresh, so that the warning is raised here
    with pytest.warns(DeprecationWarning, match="protege.engines"):
        old = importlib.import_module("protege.serve")
    assert old.EmbeddedEngine is protege.engines.EmbeddedEngine and old.__all__ == protege.engines.__all__
    assert importlib.import_module("protege.serve.engine") is protege.engines.engine
    assert importlib.import_module("protege.serve.vllm") is protege.engines.vllm
