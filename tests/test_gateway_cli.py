"""`protege serve`, `protege keys` and the offline demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner

from protege.cli.main import cli
from protege.database import open_store
from protege.gateway.keys import KeyRing, default_keys_file
from protege.testing.fake_teacher_server import FakeTeacherServerThread

ROOT = Path(__file__).resolve().parent.parent


def test_gen_encryption_key_roundtrip() -> None:
    from protege.store.crypto import PayloadCipher

    out = CliRunner().invoke(cli, ["keys", "gen-encryption-key"])
    assert out.exit_code == 0
    cipher = PayloadCipher(out.output.strip())
    assert cipher.decrypt(cipher.encrypt("secret prompt")) == "secret prompt"


def test_keys_create_list_revoke() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["keys", "create", "--name", "billing-agent"])
    assert out.exit_code == 0, out.output
    key = out.stdout.strip().splitlines()[0]
    assert key.startswith("pk-")
    assert key not in default_keys_file().read_text(), "only the hash is stored"
    ring = KeyRing([], default_keys_file())
    assert ring.enabled and ring.check(key) == "billing-agent" and ring.check("pk-nope") is None

    listed = runner.invoke(cli, ["keys", "list", "--json"])
    assert listed.exit_code == 0
    import json

    [record] = json.loads(listed.output)
    assert record["name"] == "billing-agent" and "sha256" not in record and record["revoked_at"] is None

    assert runner.invoke(cli, ["keys", "revoke", record["id"][:12]]).exit_code == 0
    assert KeyRing([], default_keys_file()).check(key) is None
    bad = runner.invoke(cli, ["keys", "revoke", "no-such-key"])
    assert bad.exit_code == 2 and "no single key" in bad.output


@pytest.mark.parametrize(("args", "message"), [
    (["--teacher", "api.example.com"], "must be an http(s) URL"),
    (["--teacher", "http://127.0.0.1:9/v1", "--db", "mysql://x/y"], "unsupported database"),
    (["--teacher", "http://127.0.0.1:9/v1", "--redact", "no_such_module_xyz:fn"], "--redact"),
    (["--teacher", "http://127.0.0.1:9/v1", "--teacher-key-env", "PROTEGE_TEST_NOT_SET"], "not set"),
])
def test_serve_rejects_bad_options(args: list[str], message: str, tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", *args])
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_process_captures_and_flushes_on_shutdown(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'served.db'}"
    port = _free_port()
    with FakeTeacherServerThread() as teacher:
        env = {**os.environ, "PROTEGE_HOME": str(tmp_path / "home"), "TEACHER_KEY": "sk-from-env"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "protege", "serve", "--teacher", teacher.url, "--port", str(port),
             "--db", db, "--teacher-key-env", "TEACHER_KEY"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="client-key", max_retries=0)
            ids = []
            for i in range(5):
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {i}"}], stream=i == 4)
                ids.append(raw.headers["x-protege-trace-id"])
            assert teacher.server.last_headers[b"authorization"] == b"Bearer sk-from-env"
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    assert proc.returncode == 0
    store = open_store(db)
    try:
        assert sorted(t.id for t in store.iter_traces()) == sorted(ids)
    finally:
        store.close()


def test_demo_runs_offline(tmp_path: Path) -> None:
    from protege.demo import run_capture

    summary = run_capture(tmp_path / "demo", sessions=2, quiet=True)
    assert summary["traces"] == summary["agent"]["calls"] == 11
    assert summary["errors"] == 1 and summary["streamed"] == 4 and summary["with_tool_calls"] == 4
    assert summary["by_task"]["plan-tools"] == 2 and summary["sessions"] == 2
    assert summary["feedback_on_session"] == 1
    names = [tc["function"]["name"] for tc in summary["example_tool_calls"]]
    assert names == ["get_weather", "get_time"]


def test_demo_command_capture_only_and_bad_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli

    out = CliRunner().invoke(cli, ["demo", "--capture-only", "--sessions", "1", "--home", str(tmp_path / "d")])
    assert out.exit_code == 0, out.output
    assert "captured by the gateway" in out.output
    bad = CliRunner().invoke(cli, ["demo", "--single", "nonsense", "--home", str(tmp_path / "e")])
    assert bad.exit_code != 0 and "NAME=CATEGORY" in bad.output and "Traceback" not in bad.output


def test_serve_options_are_declared_once_in_the_gateway_config() -> None:
    import dataclasses

    from protege.cli.serve_cmd import serve
    from protege.gateway.config import GatewayConfig

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(GatewayConfig)}
    params = {p.name: p for p in serve.params}
    for name in ("host", "port", "base_model"):
        assert params[name].help.lower().startswith(helps[name].rstrip(".").lower()), name
        assert params[name].default is None
    assert "(default 8787)" in params["port"].help and params["port"].type.name == "integer"
