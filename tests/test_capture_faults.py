"""Fault injection against the capture path: poison values, a store that
refuses records, store outages, logs that must not carry payloads. Every test
compares what the store holds with what the gateway acknowledged."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from protege.capture.spool import dead_letter_path, replay_dead_letters, spool_path_for, spool_status
from protege.capture.writer import CaptureWriter, WriterConfig
from protege.database import open_store
from protege.gateway.config import GatewayConfig
from protege.gateway.server import ServerThread
from protege.store import Trace
from protege.testing.fake_teacher_server import FakeTeacherServerThread
from protege.testing.wait import wait_until

# The fault-injection suite: `make test-faults` runs it alone (about a minute);
# it is part of the default run too.
pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def teacher() -> Iterator[FakeTeacherServerThread]:
    with FakeTeacherServerThread(slow_s=3.0) as up:
        yield up


def _config(tmp_path: Path, teacher_url: str, db_url: str, **kw: Any) -> GatewayConfig:
    capture = kw.pop("capture", None) or WriterConfig(spool_path=tmp_path / "spool" / "traces.jsonl",
                                                      retry_interval_s=0.1, flush_interval_s=0.01)
    return GatewayConfig(teacher=teacher_url, db_url=db_url, capture=capture,
                         gateway_keys=kw.pop("gateway_keys", []), keys_file=tmp_path / "keys.json", **kw)


def _count(url: str, **filters: Any) -> int:
    store = open_store(url)
    try:
        return store.count_traces(**filters)
    finally:
        store.close()


def _ordinary(srv: ServerThread, n: int, prefix: str = "q") -> list[str]:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-x", max_retries=0, timeout=10)
    ids = []
    for i in range(n):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{prefix}{i}"}], stream=i % 3 == 1)
        raw.parse()
        ids.append(raw.headers["x-protege-trace-id"])
    return ids


POISON_VALUES = [[1], {"a": 1}, 7, True, "x" * 600, "a\x00b"]
POISON_FIELDS = ["session_id", "client_id", "task", "protege_task"]


# -- validation at the edge --------------------------------------------------------
@pytest.mark.parametrize("capture_process", [False, True], ids=["thread", "process"])
def test_poison_metadata_does_not_stop_capture(tmp_path: Path, teacher: FakeTeacherServerThread,
                                               capture_process: bool) -> None:
    """The reproduction: one request with ``metadata.session_id: [1]``, then ten
    ordinary ones. The first is refused with a 400 naming the field; all ten
    are stored and /health stays ok."""
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with ServerThread(_config(tmp_path, teacher.url, url, capture_process=capture_process)) as srv:
        bad = httpx.post(srv.url + "/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": {"session_id": [1]}})
        assert bad.status_code == 400
        err = bad.json()["error"]
        assert err["param"] == "metadata.session_id" and "array" in err["message"]
        ids = _ordinary(srv, 10)
        assert srv.app.writer.flush(15)
        health = httpx.get(srv.url + "/health").json()
        assert health["status"] == "ok", health
    assert _count(url, status="ok") == 10
    store = open_store(url)
    try:
        assert all(store.get_trace(i) is not None for i in ids)
        refused = store.list_traces(status="error")
        assert len(refused) == 1 and refused[0].http_status == 400 and refused[0].session_id is None
    finally:
        store.close()


@pytest.mark.parametrize("field", POISON_FIELDS)
@pytest.mark.parametrize("value", POISON_VALUES, ids=["list", "object", "int", "bool", "long", "nul"])
def test_every_extracted_field_is_checked(tmp_path: Path, teacher: FakeTeacherServerThread, field: str,
                                          value: Any) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with ServerThread(_config(tmp_path, teacher.url, url)) as srv:
        bad = httpx.post(srv.url + "/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": {field: value}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == f"metadata.{field}"
        _ordinary(srv, 2)
        assert srv.app.writer.flush(10)
        assert srv.app.writer.stats.store_ok and srv.app.writer.stats.dead_lettered == 0
    assert _count(url, status="ok") == 2


@pytest.mark.parametrize("header", ["X-Protege-Session", "X-Protege-Client", "X-Protege-Task"])
def test_id_headers_are_checked(tmp_path: Path, teacher: FakeTeacherServerThread, header: str) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with ServerThread(_config(tmp_path, teacher.url, url)) as srv:
        bad = httpx.post(srv.url + "/v1/chat/completions", headers={header: "h" * 600},
                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == header.lower()
        ok = httpx.post(srv.url + "/v1/chat/completions", headers={header: "run-7"},
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200
        assert srv.app.writer.flush(10)
    assert _count(url, status="ok") == 1


def test_metadata_and_user_types(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with ServerThread(_config(tmp_path, teacher.url, url)) as srv:
        for body, param in (({"metadata": ["x"]}, "metadata"), ({"user": {"id": 1}}, "user")):
            r = httpx.post(srv.url + "/v1/chat/completions",
                           json={"model": "m", "messages": [{"role": "user", "content": "hi"}], **body})
            assert r.status_code == 400 and r.json()["error"]["param"] == param
        # Metadata the store does not extract is the teacher's business, whatever its type.
        r = httpx.post(srv.url + "/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": {"other": [1, 2]}})
        assert r.status_code == 200


# -- quarantine behind the edge ------------------------------------------------------
class PickyStore:
    """A real store that refuses, like a constraint would, every trace whose
    request carries ``poison`` (what validation cannot foresee)."""

    def __init__(self, url: str) -> None:
        self.inner = open_store(url)
        self.url = url
        self.down = False

    def add_traces(self, traces: list[Trace]) -> int:
        import sqlalchemy as sa

        if self.down:
            raise ConnectionError("database is unreachable")
        if any("poison" in json.dumps(t.request) for t in traces):
            raise sa.exc.IntegrityError("INSERT ...", {}, ValueError("check constraint failed"))
        return self.inner.add_traces(traces)

    def add_feedback(self, fb: Any) -> Any:
        return self.inner.add_feedback(fb)

    def close(self) -> None:
        self.inner.close()


def _trace(content: str) -> Trace:
    return Trace(request={"model": "m", "messages": [{"role": "user", "content": content}]})


def test_refused_trace_is_dead_lettered_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = PickyStore(url)
    spool = tmp_path / "spool" / "traces.jsonl"
    writer = CaptureWriter(store, WriterConfig(spool_path=spool, flush_interval_s=0.2, retry_interval_s=0.1))
    traces = [_trace("poison" if i == 3 else f"ok{i}") for i in range(10)]
    for t in traces:
        writer.submit(t)
    assert writer.flush(10)
    assert writer.stats.written == 9 and writer.stats.dead_lettered == 1 and writer.stats.store_ok
    assert writer.stats.spooled == 0
    writer.submit(_trace("after"))
    writer.close()
    assert store.inner.count_traces() == 10
    lines = dead_letter_path(spool).read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["trace_id"] == traces[3].id and entry["error_class"] == "ValueError"
    assert entry["trace"]["request"]["messages"][0]["content"] == "poison"
    # Once the cause is fixed, the dead letter goes in; a second replay adds nothing.
    store.add_traces = store.inner.add_traces  # type: ignore[method-assign]
    assert replay_dead_letters(store, spool) == (1, 0)
    assert replay_dead_letters(store, spool) == (0, 0)
    assert store.inner.count_traces() == 11


def test_poison_in_the_spool_does_not_block_replay(tmp_path: Path) -> None:
    """Spooled while the store was down, replayed once it is back: the poison
    record is set aside and every other trace goes in, across a restart."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = PickyStore(url)
    store.down = True
    spool = tmp_path / "spool" / "traces.jsonl"
    cfg = WriterConfig(spool_path=spool, flush_interval_s=0.01, retry_interval_s=0.1, batch_size=4)
    writer = CaptureWriter(store, cfg)
    traces = [_trace("poison" if i in (2, 7) else f"ok{i}") for i in range(12)]
    for t in traces:
        writer.submit(t)
    assert writer.flush(10)
    writer.close()
    assert store.inner.count_traces() == 0 and spool_status(spool)["spooled"] == 12
    store.down = False
    writer = CaptureWriter(store, cfg)
    assert wait_until(lambda: store.inner.count_traces() == 10)
    assert wait_until(lambda: writer.stats.dead_lettered == 2)
    assert writer.stats.store_ok
    writer.close()
    assert spool_status(spool) == {"spool": str(spool), "spooled": 0, "dead_letters": 2}


def test_store_down_mid_replay_keeps_the_rest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = PickyStore(url)
    spool = tmp_path / "spool" / "traces.jsonl"
    spool.parent.mkdir(parents=True)
    traces = [_trace(f"r{i}") for i in range(9)]
    spool.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in traces))
    calls = {"n": 0}
    real = store.add_traces

    def failing_after_two(batch: list[Trace]) -> int:
        calls["n"] += 1
        if calls["n"] > 2:
            raise ConnectionError("gone again")
        return real(batch)

    store.add_traces = failing_after_two  # type: ignore[method-assign]
    writer = CaptureWriter(store, WriterConfig(spool_path=spool, batch_size=3, retry_interval_s=60))
    assert writer.replay() == 6
    assert spool_status(spool)["spooled"] == 3 and store.inner.count_traces() == 6
    store.add_traces = real  # type: ignore[method-assign]
    assert writer.replay() == 3
    writer.close()
    assert store.inner.count_traces() == 9 and spool_status(spool)["spooled"] == 0


def test_odd_column_values_are_coerced_by_the_store(tmp_path: Path) -> None:
    """A trace built by other code (an SDK wrapper, an importer) with values
    of the wrong type still inserts, with the columns coerced."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        t = _trace("hi")
        t.session_id, t.upstream_model, t.prompt_tokens, t.latency_ms = [1], {"m": 1}, "12", float("nan")  # type: ignore[assignment]
        t.finish_reason = "st\x00op"
        assert store.add_traces([t]) == 1
        back = store.get_trace(t.id)
        assert back is not None and back.session_id == "[1]" and back.upstream_model == '{"m":1}'
        assert back.prompt_tokens is None and back.latency_ms is None and back.finish_reason == "stop"
    finally:
        store.close()


@pytest.mark.postgres
def test_odd_values_on_postgres(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        t = _trace("hi")
        t.session_id, t.client_id = "a\x00b", ["c"]  # type: ignore[assignment]
        assert store.add_traces([t]) == 1
        back = store.get_trace(t.id)
        assert back is not None and back.session_id == "ab" and back.client_id == '["c"]'
    finally:
        store.close()


def test_counts_in_metrics_and_logs_stats(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli

    url = f"sqlite:///{tmp_path / 'gw.db'}"
    store = PickyStore(url)
    cfg = _config(tmp_path, teacher.url, url, capture=WriterConfig(retry_interval_s=0.1, flush_interval_s=0.01))
    with ServerThread(cfg, store=store) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-x", max_retries=0, timeout=10)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "poison"}])
        _ordinary(srv, 3)
        assert srv.app.writer.flush(10)
        metrics = httpx.get(srv.url + "/metrics").text
        assert "protege_capture_dead_lettered_total 1.0" in metrics
        assert httpx.get(srv.url + "/health").json()["capture"]["dead_lettered"] == 1
    assert srv.app.writer.spool_path == spool_path_for(url)
    res = CliRunner().invoke(cli, ["logs", "stats", "--db", url, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["capture"]["dead_letters"] == 1
    store.close()
    # The plain store takes it: the rule that refused it is gone.
    res = CliRunner().invoke(cli, ["logs", "spool", "--db", url, "--replay"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1].endswith("0 spooled traces, 0 dead letters")
    assert _count(url) == 4


# -- no payload in logs ------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the formatter adds any traceback


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR])
def test_store_errors_never_log_payloads(tmp_path: Path, teacher: FakeTeacherServerThread, level: int) -> None:
    """A real SQLite store whose every insert fails (a trigger), another that
    is down, feedback that cannot be stored: the unique prompt, session id and
    comment appear in no log line at any level, tracebacks included."""
    import sqlalchemy as sa

    secret = f"zq-secret-{level}-{time.time_ns()}"
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    store = open_store(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER no_insert BEFORE INSERT ON traces "
                             "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        conn.exec_driver_sql("CREATE TRIGGER no_feedback BEFORE INSERT ON feedback "
                             "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    handler = _Collect()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        cfg = _config(tmp_path, teacher.url, url)
        with ServerThread(cfg, store=store) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-x", max_retries=0, timeout=10)
            for stream in (False, True):
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": secret}], stream=stream,
                    extra_headers={"X-Protege-Session": secret + "-session"})
                raw.parse()
            trace_id = raw.headers["x-protege-trace-id"]
            assert srv.app.writer.flush(10)
            assert srv.app.writer.stats.dead_lettered == 2
            fb = httpx.post(srv.url + "/v1/feedback", json={"trace_id": trace_id, "score": 1,
                                                             "comment": secret + "-comment"})
            assert fb.status_code == 503 and secret not in fb.text
        # And a store that is down (spooling), then a build failure.
        flaky = PickyStore(url)
        flaky.down = True
        writer = CaptureWriter(flaky, WriterConfig(spool_path=tmp_path / "s2" / "t.jsonl"))
        writer.submit(_trace(secret))

        def broken() -> Trace:
            raise ValueError(f"cannot parse {secret}")

        writer.submit(broken)
        assert writer.flush(10)
        writer.close()
        with pytest.raises(sa.exc.IntegrityError) as info:
            store.add_traces([_trace(secret)])
        assert secret not in str(info.value)
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        store.close()
    text = "\n".join(handler.lines)
    assert secret not in text
    if level <= logging.ERROR:
        assert "refused by the store (IntegrityError)" in text and trace_id in text
        assert "could not build a trace; it is lost (ValueError)" in text


# -- deep JSON -----------------------------------------------------------------------
DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("skip", [False, True])
def test_logs_import_deeply_nested_line(tmp_path: Path, skip: bool) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli

    good = {"timestamp": 1_700_000_000, "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            "response": {"choices": [{"message": {"role": "assistant", "content": "yo"}}]}}
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps(good) + "\n" + '{"request": ' + DEEP + "}\n")
    url = f"sqlite:///{tmp_path / 'i.db'}"
    args = ["logs", "import", str(f), "--db", url] + (["--skip-invalid"] if skip else [])
    res = CliRunner().invoke(cli, args)
    assert "Traceback" not in res.output and not isinstance(res.exception, RecursionError)
    assert "line 2" in res.output and "nested too deeply" in res.output
    assert res.exit_code == (0 if skip else 2)
    assert _count(url) == (1 if skip else 0)


def test_deeply_nested_request_is_set_aside(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    """orjson takes 1000 levels, the store's encoder does not: the trace goes to
    the dead letters and the traces behind it are stored."""
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    body = '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "extra": ' + "[" * 1000 + "]" * 1000 + "}"
    with ServerThread(_config(tmp_path, teacher.url, url)) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200
        _ordinary(srv, 3)
        assert srv.app.writer.flush(10)
        stats = srv.app.writer.stats
        assert stats.dead_lettered == 1 and stats.store_ok and stats.build_errors == 0
    assert _count(url) == 3
    assert spool_status(tmp_path / "spool" / "traces.jsonl")["dead_letters"] == 1


def test_json_loads_guard() -> None:
    from protege.safejson import JSONTooDeep, json_loads

    with pytest.raises(JSONTooDeep):
        json_loads(DEEP)
    with pytest.raises(json.JSONDecodeError):
        json_loads(DEEP.encode())
    assert json_loads('{"a": [1]}') == {"a": [1]}


# -- one spool per store -------------------------------------------------------------
def test_two_gateways_sharing_a_home_keep_their_spools(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    """The probe: two gateways, one PROTEGE_HOME, default spools. A's store is
    down; B's is up. Nothing of A's reaches B, and once A's store is back every
    one of A's traces is in it and A is healthy again."""
    url_a, url_b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    store_a, store_b = PickyStore(url_a), PickyStore(url_b)
    store_a.down = True
    cap = WriterConfig(retry_interval_s=0.1, flush_interval_s=0.01)
    with ServerThread(_config(tmp_path, teacher.url, url_a, capture=cap), store=store_a) as a, \
            ServerThread(_config(tmp_path, teacher.url, url_b, capture=WriterConfig(
                retry_interval_s=0.1, flush_interval_s=0.01)), store=store_b) as b:
        assert a.app.writer.spool_path != b.app.writer.spool_path
        ids_a = _ordinary(a, 10, "a")
        ids_b = _ordinary(b, 4, "b")
        assert a.app.writer.flush(10) and b.app.writer.flush(10)
        time.sleep(0.5)  # several replay rounds of B
        assert store_b.inner.count_traces() == 4 and store_a.inner.count_traces() == 0
        assert httpx.get(a.url + "/health").json()["status"] == "degraded"
        store_a.down = False
        assert wait_until(lambda: store_a.inner.count_traces() == 10)
        assert wait_until(lambda: httpx.get(a.url + "/health").json()["status"] == "ok")
    assert sorted(t.id for t in store_a.inner.iter_traces()) == sorted(ids_a)
    assert sorted(t.id for t in store_b.inner.iter_traces()) == sorted(ids_b)


def test_spool_key_follows_the_store() -> None:
    from protege.capture.spool import store_key

    pg = "postgresql://u:secret@db:5432/protege"
    assert store_key(pg) == store_key("postgresql://u:other@db:5432/protege")  # a new password, the same store
    assert store_key(pg) == store_key("postgres://u:secret@db:5432/protege")
    assert store_key(pg) != store_key("postgresql://u@db:5432/protege2")
    assert store_key(pg) != store_key(pg + "?options=-csearch_path%3Ds1")
    assert "secret" not in store_key(pg)
    assert store_key("sqlite:///a/x.db") != store_key("sqlite:///b/x.db")


def test_writers_sharing_one_spool_lose_and_double_nothing(tmp_path: Path) -> None:
    """Two writers of the same store (two gateway workers) spool and replay the
    same file at once: every trace ends in the store exactly once."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    spool = tmp_path / "spool" / "traces.jsonl"
    stores = [PickyStore(url), PickyStore(url)]
    for s in stores:
        s.down = True
    cfg = WriterConfig(spool_path=spool, flush_interval_s=0.005, retry_interval_s=0.05, batch_size=7)
    writers = [CaptureWriter(s, cfg) for s in stores]
    sent = []
    for i in range(200):
        t = _trace(f"s{i}")
        sent.append(t.id)
        writers[i % 2].submit(t)
        if i == 120:
            for s in stores:
                s.down = False
    for w in writers:
        assert w.flush(10)
    assert wait_until(lambda: stores[0].inner.count_traces() == 200)
    for w in writers:
        w.close()
    assert sorted(t.id for t in stores[0].inner.iter_traces()) == sorted(sent)
    assert spool_status(spool)["spooled"] == 0


# -- hard kills ----------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(c) for c in (task / "children").read_text().split()]
                out.extend(kids)
                stack.extend(kids)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _serve(tmp_path: Path, teacher_url: str, db_url: str, durability: str) -> tuple[Any, str]:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PROTEGE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "protege", "serve", "--teacher", teacher_url, "--port",
                             str(port), "--db", db_url, "--durability", durability], env=env)
    base = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: _healthy(base), 60), "the gateway did not start"
    return proc, base


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("durability", ["write", "fsync"])
@pytest.mark.parametrize("kill_after", [50, 20, random.Random(14).randint(1, 49)],
                         ids=["after-burst", "mid-burst", "seeded-point"])
def test_kill_9_loses_no_acknowledged_call(tmp_path: Path, teacher: FakeTeacherServerThread, durability: str,
                                           kill_after: int) -> None:
    """The probe: a burst of 50 calls from 16 clients, then ``kill -9`` of the
    gateway and its capture child together (after the burst, or with calls
    still in flight). After a restart every acknowledged call is stored."""
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'kill.db'}"
    proc, base = _serve(tmp_path, teacher.url, url, durability)
    children = _descendants(proc.pid)
    assert children, "protege serve runs its capture in a child process"
    acked: list[str] = []
    killed = False

    def call(i: int) -> None:
        nonlocal killed
        try:
            r = httpx.post(base + "/v1/chat/completions", timeout=10, json={
                "model": "gpt-4o-mini", "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": f"burst {i}"}]})
        except httpx.HTTPError:
            return  # cut off by the kill: never acknowledged
        if r.status_code == 200 and (i % 2 == 1 or r.text.rstrip().endswith("[DONE]")):
            acked.append(r.headers["x-protege-trace-id"])
        if len(acked) >= kill_after and not killed:
            killed = True
            for pid in [proc.pid, *children]:
                os.kill(pid, signal.SIGKILL)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(call, range(50)))
    if not killed:
        for pid in [proc.pid, *children]:
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)
    assert len(acked) >= kill_after
    # The restart recovers the dead gateway's journal; a clean stop flushes it.
    proc, base = _serve(tmp_path, teacher.url, url, durability)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    store = open_store(url)
    try:
        stored = {t.id for t in store.iter_traces()}
    finally:
        store.close()
    assert set(acked) <= stored, f"{len(set(acked) - stored)} of {len(acked)} acknowledged calls lost"
    assert not list((tmp_path / "home" / "spool").glob("*/traces.journal/*/*.seg"))


# -- limits, keys, feedback, the CLI ---------------------------------------------------
def test_body_limit_is_413(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with ServerThread(_config(tmp_path, teacher.url, url, max_body_bytes=20_000)) as srv:
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 30_000}]}
        with pytest.raises(openai.APIStatusError) as info:
            openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-x", max_retries=0).chat.completions.create(**big)
        assert info.value.status_code == 413
        err = info.value.response.json()["error"]
        assert err["code"] == "request_too_large" and err["type"] == "invalid_request_error"
        r = httpx.post(srv.url + "/v1/feedback", json={"trace_id": "x", "score": 1, "comment": "y" * 30_000})
        assert r.status_code == 413
        ids = _ordinary(srv, 2)
        assert srv.app.writer.flush(10)
        assert 'status="413"' in httpx.get(srv.url + "/metrics").text
    assert _count(url) == 2 and teacher.server.last_body.find(b"x" * 30_000) == -1
    assert len(ids) == 2


def test_health_and_metrics_behind_keys(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with ServerThread(_config(tmp_path, teacher.url, url, gateway_keys=["k-ops"])) as srv:
        for path in ("/health", "/metrics"):
            r = httpx.get(srv.url + path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert httpx.get(srv.url + path, headers={"X-Protege-Key": "k-ops"}).status_code == 200
        health = httpx.get(srv.url + "/health", headers={"Authorization": "Bearer k-ops"}).json()
        assert health["teacher"] == health["upstream"] == teacher.url  # the former key stays
    with ServerThread(_config(tmp_path, teacher.url, url, gateway_keys=["k-ops"], open_metrics=True)) as srv:
        assert "protege_capture_written_total" in httpx.get(srv.url + "/metrics").text
        assert httpx.get(srv.url + "/health").json() == {"status": "ok"}  # no teacher URL, no counters
        r = httpx.post(srv.url + "/v1/feedback", json={"session_id": "s", "score": 1})
        assert r.status_code == 401  # only the scraper's endpoints open


def test_feedback_for_an_unknown_trace_is_404(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with ServerThread(_config(tmp_path, teacher.url, url)) as srv:
        r = httpx.post(srv.url + "/v1/feedback", json={"trace_id": "01NOSUCHTRACE0000000000000", "score": 1})
        assert r.status_code == 404
        assert r.json()["error"]["param"] == "trace_id" and r.json()["error"]["code"] == "trace_not_found"
        # Feedback right after the answer: its trace may still be on its way to the store.
        [tid] = _ordinary(srv, 1)
        assert httpx.post(srv.url + "/v1/feedback", json={"trace_id": tid, "score": 1}).status_code == 200
        assert srv.app.writer.flush(10)
    # Known from the store alone (after a restart).
    with ServerThread(_config(tmp_path, teacher.url, url)) as srv:
        assert httpx.post(srv.url + "/v1/feedback", json={"trace_id": tid, "label": "good"}).status_code == 200
    store = open_store(url)
    try:
        assert len(store.feedback_for(trace_id=tid)) == 2
    finally:
        store.close()


@pytest.mark.parametrize("command", [["logs", "list"], ["logs", "stats"], ["logs", "show", "x"],
                                     ["logs", "export"], ["logs", "spool"], ["report"]])
def test_read_commands_do_not_invent_a_store(tmp_path: Path, command: list[str]) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli

    missing = tmp_path / "no" / "such" / "dir"
    res = CliRunner().invoke(cli, [*command, "--db", f"sqlite:///{missing / 'x.db'}"])
    assert res.exit_code == 2, res.output
    assert "does not exist" in res.output and "Traceback" not in res.output
    assert not missing.exists() and not (tmp_path / "no").exists()


# -- store locks, teacher faults ----------------------------------------------------
def test_store_locked_does_not_delay_answers(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    """Another process holds the SQLite store's write lock for 2 s: the answers
    do not wait for it, and every trace is stored once it is released."""
    import sqlite3
    import threading

    db = tmp_path / "gw.db"
    url = f"sqlite:///{db}"
    open_store(url).close()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(2.0, lambda: holder.execute("COMMIT"))
    with ServerThread(_config(tmp_path, teacher.url, url)) as srv:
        release.start()
        t0 = time.monotonic()
        ids = _ordinary(srv, 12)
        assert time.monotonic() - t0 < 1.5, "answers waited for the store's lock"
        assert wait_until(lambda: srv.app.writer.stats.written == 12)
    release.join()
    holder.close()
    store = open_store(url)
    try:
        assert sorted(t.id for t in store.iter_traces()) == sorted(ids)
    finally:
        store.close()


def test_store_locked_past_its_timeout_spools(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    """A lock held past the driver's timeout looks like an outage: the batch
    spools and is replayed when the lock goes, nothing dead-lettered."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'gw.db'}"
    store = PickyStore(url)
    locked_until = time.monotonic() + 1.0
    real = store.add_traces

    def add(traces: list[Trace]) -> int:
        if time.monotonic() < locked_until:
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        return real(traces)

    store.add_traces = add  # type: ignore[method-assign]
    with ServerThread(_config(tmp_path, teacher.url, url), store=store) as srv:
        ids = _ordinary(srv, 8)
        assert wait_until(lambda: store.inner.count_traces() == 8)
        stats = srv.app.writer.stats
        assert stats.spooled >= 1 and stats.dead_lettered == 0 and stats.store_ok
    assert sorted(t.id for t in store.inner.iter_traces()) == sorted(ids)


@pytest.mark.parametrize("fault", ["down", "timeout", "500", "break"])
def test_teacher_faults_are_answered_and_recorded(tmp_path: Path, teacher: FakeTeacherServerThread,
                                                   fault: str) -> None:
    """Whatever the teacher does, every call gets an answer and a trace: the
    count stored equals the count answered."""
    import socket

    url = f"sqlite:///{tmp_path / 'gw.db'}"
    base = teacher.url
    if fault == "down":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens there
    model = {"down": "m", "timeout": "fake-slow", "500": "fake-error-500", "break": "fake-break"}[fault]
    statuses = []
    with ServerThread(_config(tmp_path, base, url, timeout_s=0.5)) as srv:
        for i in range(6):
            r = httpx.post(srv.url + "/v1/chat/completions", timeout=10, json={
                "model": model, "stream": i % 2 == 0, "messages": [{"role": "user", "content": f"f{i}"}]})
            statuses.append(r.status_code)
            assert r.headers.get("x-protege-trace-id")
        ids = _ordinary(srv, 2) if fault != "down" else []
        assert srv.app.writer.flush(10) and srv.app.writer.stats.store_ok
    assert _count(url) == len(statuses) + len(ids)
    assert _count(url, status="error") == len(statuses)
    if fault == "timeout":
        assert set(statuses) == {504}


def test_capture_child_killed_alone_loses_nothing(tmp_path: Path, teacher: FakeTeacherServerThread) -> None:
    """``kill -9`` of the capture child only, right after a burst: what it held
    unstored comes back from the gateway's journal into the in-process writer."""
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'gw.db'}"
    cap = WriterConfig(spool_path=tmp_path / "spool" / "traces.jsonl", flush_interval_s=0.5)
    with ServerThread(_config(tmp_path, teacher.url, url, capture_process=True, capture=cap)) as srv:
        with ThreadPoolExecutor(8) as pool:
            ids = [i for batch in pool.map(lambda k: _ordinary(srv, 4, f"k{k}-"), range(8)) for i in batch]
        os.kill(srv.app.writer._proc.pid, signal.SIGKILL)
        ids += _ordinary(srv, 3, "after")
        assert wait_until(lambda: _count(url) == len(ids))
    store = open_store(url)
    try:
        assert sorted(t.id for t in store.iter_traces()) == sorted(ids)
    finally:
        store.close()
    assert not list((tmp_path / "spool" / "traces.journal").glob("*/*.seg"))
