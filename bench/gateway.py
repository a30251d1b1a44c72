"""Gateway benchmark: the latency protege adds over calling the teacher
directly, its requests/s, and traces stored against requests sent; the
LiteLLM proxy under the same load, side by side.

Besides latency and throughput it reports CPU microseconds per request used
by each target's own processes (the gateway and its capture child; LiteLLM's
server): on a shared machine that cost is steadier than latency.

Every target sits in front of the same fake teacher (a raw asyncio server on
loopback, bench/fake_teacher_server.py) and gets the same requests from the same
load generator (a lean keep-alive HTTP/1.1 client, one connection per
concurrent worker, closed loop, bounded by time and request count). Targets
are measured in turns (direct, protege, litellm) for several rounds; the
figures are medians over rounds, and "added" is target minus direct within
the same round.

    .venv/bin/python bench/gateway.py --out /tmp/gateway-bench.json

LiteLLM runs from its own virtualenv (.venv-bench, created on first use with
`pip install 'litellm[proxy]'`) so it cannot disturb .venv; --no-litellm skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httptools
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_VENV = ROOT / ".venv-bench"
MODEL = "bench-model"

# A typical agent call: system prompt, a user turn, two tools.
REQUEST = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a travel assistant. Use the tools to answer; be brief."},
        {"role": "user", "content": "What is the weather in Lisbon tomorrow, and what time is it there now?"},
    ],
    "tools": [
        {"type": "function", "function": {
            "name": "get_weather", "description": "Weather forecast for a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]}}},
        {"type": "function", "function": {
            "name": "get_time", "description": "Local time in a timezone",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
    ],
    "temperature": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f}s")


# -- load generator ----------------------------------------------------------
class _Client(asyncio.Protocol):
    """One keep-alive connection; ``request()`` sends prebuilt bytes and waits
    for the whole response (a whole SSE stream included)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.fut: asyncio.Future | None = None
        self.tail = b""
        self.first: float | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.tail = (self.tail + body)[-64:]

    def on_message_complete(self) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection closed"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.fut = asyncio.get_running_loop().create_future()
        self.tail = b""
        self.first = None
        assert self.transport is not None
        self.transport.write(data)
        status = await self.fut
        return status, self.tail


@dataclass
class Cell:
    target: str
    mode: str
    concurrency: int
    round: int
    load: str = "closed"  # closed loop, or a fixed offered rate ("400/s")
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    rps: float = 0.0
    ttft_p50_ms: float | None = None
    cpu_us_per_req: float | None = None  # CPU of the target's processes per request (teacher excluded)
    error_samples: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def build_request(port: int, stream: bool, auth: str = "sk-bench") -> bytes:
    body = dict(REQUEST)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    raw = orjson.dumps(body)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {auth}\r\n"
            f"X-Protege-Task: bench\r\nContent-Length: {len(raw)}\r\n\r\n").encode()
    return head + raw


async def run_load(port: int, stream: bool, concurrency: int, duration: float, max_requests: int,
                   target: str, mode: str, rnd: int, auth: str = "sk-bench", rate: float | None = None) -> Cell:
    """Closed loop (each worker sends again as soon as it has its answer), or
    with ``rate`` a fixed schedule of ``rate`` requests/s spread over the
    workers; then latency runs from the scheduled send time, so falling
    behind shows up as latency instead of hiding (no coordinated omission)."""
    data = build_request(port, stream, auth)
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(_Client, "127.0.0.1", port)
        clients.append(proto)
    latencies: list[float] = []
    ttfts: list[float] = []
    cell = Cell(target=target, mode=mode, concurrency=concurrency, round=rnd,
                load="closed" if rate is None else f"{rate:g}/s")
    budget = [max_requests]
    start = time.perf_counter()
    stop_at = start + duration
    period = concurrency / rate if rate else 0.0

    async def worker(c: _Client, index: int) -> None:
        k = 0
        while budget[0] > 0 and time.perf_counter() < stop_at:
            budget[0] -= 1
            cell.requests += 1
            if rate:
                t = start + (index / concurrency + k) * period
                k += 1
                delay = t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                t = time.perf_counter()
            try:
                status, tail = await c.request(data)
            except ConnectionError as exc:
                cell.errors += 1
                if len(cell.error_samples) < 3:
                    cell.error_samples.append(repr(exc))
                return
            end = time.perf_counter()
            ok = status == 200 and (not stream or b"[DONE]" in tail)
            if not ok:
                cell.errors += 1
                if len(cell.error_samples) < 3:
                    cell.error_samples.append(f"{status} {tail[-60:]!r}")
            latencies.append(end - t)
            if c.first is not None:
                ttfts.append(c.first - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, i) for i, c in enumerate(clients)))
    cell.seconds = time.perf_counter() - t0
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    ms = [x * 1000 for x in latencies]
    cell.p50_ms, cell.p99_ms = _pct(ms, 0.5), _pct(ms, 0.99)
    cell.mean_ms = statistics.fmean(ms) if ms else float("nan")
    cell.rps = len(latencies) / cell.seconds if cell.seconds else 0.0
    if stream and ttfts:
        cell.ttft_p50_ms = _pct([x * 1000 for x in ttfts], 0.5)
    return cell


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants:
    a cost per request that the other tenants of a shared machine do not blur."""
    total = 0.0
    stack = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


# -- the targets -------------------------------------------------------------
def start_teacher(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_teacher_server.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        raise RuntimeError(f"fake teacher did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1].split("/")[0])


def start_protege(teacher_port: int, workdir: Path, env: dict[str, str],
                  durability: str = "write") -> tuple[subprocess.Popen, int, str]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{workdir / 'bench.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "protege", "serve", "--teacher", f"http://127.0.0.1:{teacher_port}/v1",
         "--port", str(port), "--db", db, "--spool", str(workdir / "spool.jsonl"), "--durability", durability],
        env={**env, "PROTEGE_HOME": str(workdir / "home")}, cwd=ROOT,
    )
    wait_http(f"http://127.0.0.1:{port}/health", 30, proc)
    return proc, port, db


def ensure_litellm(install: bool) -> Path | None:
    exe = BENCH_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    if not install:
        return None
    print(f"creating {BENCH_VENV} and installing litellm[proxy] (once) ...", flush=True)
    try:
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        print(f"LiteLLM skipped: could not install it ({exc})", flush=True)
        return None
    return exe if exe.exists() else None


def start_litellm(exe: Path, teacher_port: int, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{teacher_port}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "  turn_off_message_logging: true\n"
        "  set_verbose: false\n"
        # No gateway auth on either side (protege runs without gateway keys too).
        "general_settings:\n"
        "  dangerously_permit_weak_or_unset_master_key: true\n"
    )
    env = {**os.environ, "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION",
           "DISABLE_SCHEMA_UPDATE": "true",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_DOCS": "True"}
    for key in ("DATABASE_URL", "PROTEGE_DB_URL"):
        env.pop(key, None)
    log = open(workdir / "litellm.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                             "--num_workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", 120, proc)
    return proc, port


def stop(proc: subprocess.Popen | None, timeout: float = 60) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- main --------------------------------------------------------------------
def summarize(cells: list[Cell], targets: list[str]) -> list[dict[str, Any]]:
    rows = []

    def order(k: tuple[str, str, int]) -> tuple[int, int, float, int]:
        mode, load, conc = k
        return (load != "closed", mode != "plain", float(load[:-2]) if load != "closed" else 0.0, conc)

    for mode, load, conc in sorted({(c.mode, c.load, c.concurrency) for c in cells}, key=order):
        row: dict[str, Any] = {"mode": mode, "load": load, "concurrency": conc}
        mine_all = [c for c in cells if c.mode == mode and c.load == load and c.concurrency == conc]
        rounds = sorted({c.round for c in mine_all})
        by = {(c.target, c.round): c for c in mine_all}
        for t in targets:
            mine = [by[(t, r)] for r in rounds if (t, r) in by]
            if not mine:
                continue
            row[t] = {
                "p50_ms": statistics.median(c.p50_ms for c in mine),
                "p99_ms": statistics.median(c.p99_ms for c in mine),
                "rps": statistics.median(c.rps for c in mine),
                "cpu_us_per_req": statistics.median(c.cpu_us_per_req or 0.0 for c in mine),
                "requests": sum(c.requests for c in mine),
                "errors": sum(c.errors for c in mine),
            }
            if t != "direct":
                pairs = [(by[(t, r)], by[("direct", r)]) for r in rounds if (t, r) in by and ("direct", r) in by]
                row[t]["added_p50_ms"] = statistics.median(a.p50_ms - d.p50_ms for a, d in pairs)
                row[t]["added_p99_ms"] = statistics.median(a.p99_ms - d.p99_ms for a, d in pairs)
        if "protege" in row and "litellm" in row:
            row["rps_ratio_protege_vs_litellm"] = row["protege"]["rps"] / max(row["litellm"]["rps"], 1e-9)
        rows.append(row)
    return rows


def print_durability(rows: list[dict[str, Any]], names: list[str], modes: list[str]) -> None:
    """The capture durability modes side by side: latency added over direct."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="capture durability: latency added over direct (ms p50/p99, same round, medians "
                        "over rounds), requests/s")
    for col in ("mode", "load", "conc"):
        table.add_column(col, justify="right")
    for mode in modes:
        table.add_column(f"--durability {mode}", justify="right")
        table.add_column("rps", justify="right")
    for r in rows:
        cells = [r["mode"], r["load"], str(r["concurrency"])]
        for name in names:
            g = r.get(name)
            cells += ([f"{g['added_p50_ms']:+.2f}/{g['added_p99_ms']:+.2f}", f"{g['rps']:.0f}"] if g
                      else ["-", "-"])
        table.add_row(*cells)
    Console(width=200).print(table)


def print_table(rows: list[dict[str, Any]], targets: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="protege vs direct vs LiteLLM: fake teacher on loopback; latency ms p50/p99, "
                        "added = target - direct (same round), medians over rounds")
    for col in ("mode", "load", "conc", "direct", "rps", "protege", "added", "rps", "cpu us/req"):
        table.add_column(col, justify="right")
    if "litellm" in targets:
        for col in ("litellm", "added", "rps", "cpu us/req", "protege/litellm rps"):
            table.add_column(col, justify="right")
    for r in rows:
        d, p = r["direct"], r["protege"]
        cells = [r["mode"], r["load"], str(r["concurrency"]), f"{d['p50_ms']:.2f}/{d['p99_ms']:.2f}",
                 f"{d['rps']:.0f}", f"{p['p50_ms']:.2f}/{p['p99_ms']:.2f}",
                 f"{p['added_p50_ms']:+.2f}/{p['added_p99_ms']:+.2f}", f"{p['rps']:.0f}",
                 f"{p['cpu_us_per_req']:.0f}"]
        if "litellm" in targets:
            if "litellm" in r:
                llm = r["litellm"]
                cells += [f"{llm['p50_ms']:.1f}/{llm['p99_ms']:.1f}",
                          f"{llm['added_p50_ms']:+.1f}/{llm['added_p99_ms']:+.1f}", f"{llm['rps']:.0f}",
                          f"{llm['cpu_us_per_req']:.0f}", f"{r['rps_ratio_protege_vs_litellm']:.1f}x"]
            else:
                cells += ["over capacity", "", "", "", ""]
        table.add_row(*cells)
    Console(width=200).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,16,64", help="comma list")
    ap.add_argument("--modes", default="plain,stream", help="plain,stream")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--max-requests", type=int, default=4000, help="requests per measurement at most")
    ap.add_argument("--rounds", type=int, default=3, help="turns of direct/protege/litellm per cell")
    ap.add_argument("--warmup", type=int, default=100, help="unmeasured requests (1 s at most) before each measurement")
    ap.add_argument("--paced", default="25,400", help="fixed offered rates (req/s) measured at concurrency 16; '' for none")
    ap.add_argument("--paced-rounds", type=int, default=2, help="rounds of the paced measurements")
    ap.add_argument("--durability", default="write,off,fsync",
                    help="capture durability modes side by side (comma list); the first is the 'protege' "
                         "target, the others run as protege:MODE")
    ap.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM comparison")
    ap.add_argument("--no-install", action="store_true", help="do not create .venv-bench when missing")
    ap.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    concurrencies = [int(x) for x in args.concurrency.split(",")]
    modes = args.modes.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="protege-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTEGE_")}
    up_proc = llm_proc = None
    durabilities = [d for d in args.durability.split(",") if d]
    gw_names = ["protege" if i == 0 else f"protege:{d}" for i, d in enumerate(durabilities)]
    gw_procs: dict[str, subprocess.Popen] = {}
    db_urls: dict[str, str] = {}
    cells: list[Cell] = []
    sent = dict.fromkeys(gw_names, 0)
    note = None
    try:
        up_proc, up_port = start_teacher(env)
        ports = {"direct": up_port}
        pids = {"direct": up_proc.pid}
        for name, dur in zip(gw_names, durabilities, strict=True):
            proc, port, db_urls[name] = start_protege(up_port, workdir / name.replace(":", "-"), env, dur)
            gw_procs[name], ports[name], pids[name] = proc, port, proc.pid
        targets = ["direct", *gw_names]
        if not args.no_litellm:
            exe = ensure_litellm(not args.no_install)
            if exe is None:
                note = "LiteLLM skipped: .venv-bench/bin/litellm not found (run without --no-install)"
                print(note)
            else:
                print("starting LiteLLM proxy ...", flush=True)
                llm_proc, llm_port = start_litellm(exe, up_port, workdir)
                ports["litellm"] = llm_port
                pids["litellm"] = llm_proc.pid
                targets.append("litellm")
        print(f"targets: {ports}; {len(modes)}x{len(concurrencies)} cells x {args.rounds} rounds", flush=True)
        def measure(t: str, stream: bool, conc: int, rnd: int, mode: str, rate: float | None, secs: float) -> Cell:
            warm = asyncio.run(run_load(ports[t], stream, min(conc, 16), 1.0, args.warmup, t, mode, rnd))
            cpu0 = tree_cpu_s(pids[t])
            cell = asyncio.run(run_load(ports[t], stream, conc, secs, args.max_requests, t, mode, rnd, rate=rate))
            if cell.requests:
                cell.cpu_us_per_req = (tree_cpu_s(pids[t]) - cpu0) / cell.requests * 1e6
            if t in sent:
                sent[t] += warm.requests + cell.requests
            cells.append(cell)
            print(f"  {mode:6} {cell.load:7} c={conc:<3} r{rnd} {t:8} {cell.rps:8.0f} req/s  p50 {cell.p50_ms:8.2f} ms"
                  f"  p99 {cell.p99_ms:8.2f} ms  cpu {cell.cpu_us_per_req or 0:7.0f} us/req  errors {cell.errors}",
                  flush=True)
            return cell

        capacity: dict[tuple[str, str], float] = {}
        for mode in modes:
            stream = mode == "stream"
            for conc in concurrencies:
                for rnd in range(args.rounds):
                    for t in targets:
                        cell = measure(t, stream, conc, rnd, mode, None, args.duration)
                        if conc == 16:
                            capacity[(t, mode)] = max(capacity.get((t, mode), 0.0), cell.rps)
        rates = [float(x) for x in args.paced.split(",") if x.strip()]
        for mode in modes:
            stream = mode == "stream"
            for rate in rates:
                for rnd in range(args.paced_rounds):
                    for t in targets:
                        # A target offered more than it can serve only measures its queue.
                        if t == "litellm" and rate > 0.8 * capacity.get((t, mode), float("inf")):
                            continue
                        measure(t, stream, 16, rnd, mode, rate, max(args.duration, 3.0))
        # Graceful stop flushes every pending trace into the store.
        from protege.database import open_store

        traces = {}
        for name, proc in gw_procs.items():
            stop(proc)
            store = open_store(db_urls[name])
            stored = store.count_traces()
            stored_ok = store.count_traces(status="ok")
            store.close()
            spool_left = sum(f.stat().st_size for f in (workdir / name.replace(":", "-")).glob("spool*.jsonl"))
            traces[name] = {"sent": sent[name], "stored": stored, "stored_ok": stored_ok,
                            "lost": sent[name] - stored, "spool_bytes_left": spool_left}
        gw_procs = {}
        rows = summarize(cells, targets)
        print_table(rows, targets)
        if len(gw_names) > 1:
            print_durability(rows, gw_names, durabilities)
        for name, t in traces.items():
            print(f"traces: sent through {name} {t['sent']}, stored {t['stored']} (ok {t['stored_ok']}), "
                  f"lost {t['lost']}, spool bytes left {t['spool_bytes_left']}")
        result = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg": os.getloadavg()},
            "settings": vars(args) | {"out": str(args.out) if args.out else None},
            "rows": rows,
            "durability": dict(zip(gw_names, durabilities, strict=True)),
            "traces": traces,
            "cells": [asdict(c) for c in cells],
            "note": note,
        }
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
            print(f"results: {args.out}")
    finally:
        for proc in gw_procs.values():
            stop(proc)
        stop(llm_proc, 20)
        stop(up_proc, 5)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
