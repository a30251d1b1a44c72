"""``protege serve``: the OpenAI-compatible capture gateway."""

from __future__ import annotations

import click

from protege.cli.common import UserError, config_option, db_option, renamed_option
from protege.gateway.config import GatewayConfig


@click.command("serve")
@renamed_option("--teacher", old=("--upstream",), envvar=["PROTEGE_TEACHER", "PROTEGE_UPSTREAM"], required=True,
                metavar="URL", help="OpenAI-compatible base URL of the teacher, /v1 included (env PROTEGE_TEACHER).")
@config_option(GatewayConfig, "host")
@config_option(GatewayConfig, "port")
@db_option
@renamed_option("--teacher-key-env", old=("--upstream-key-env",), metavar="NAME", default=None,
                help="Environment variable with the teacher's API key (else the client's Authorization is forwarded).")
@click.option("--redact", metavar="MODULE:FUNCTION", default=None,
              help="Applied to every trace before it is stored, e.g. protege.curate.scrub:redact_trace.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, type=float,
              help="Seconds to wait for the teacher before answering 504.")
@click.option("--client", type=click.Choice(["auto", "aiohttp", "httpx"]), default="auto", show_default=True,
              help="HTTP client to the teacher.")
@click.option("--spool", "spool_path", default=None, type=click.Path(dir_okay=False),
              help="Spool file for traces while the store is down (default: the store's own, under PROTEGE_HOME/spool).")
@click.option("--durability", type=click.Choice(["write", "fsync", "off"]), default="write", show_default=True,
              help="write: each capture reaches the OS (a local journal) before the client gets its answer, so "
                   "no kill loses an acknowledged call; fsync: the answer also waits for the disk (group "
                   "fsync), so a power cut loses none either; off: captures queue in memory only.")
@click.option("--max-body-mb", default=8.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body accepted, in MiB; a larger one gets a 413.")
@click.option("--open-metrics", is_flag=True,
              help="With gateway keys on, serve /metrics and a minimal /health without a key (for a scraper).")
@click.option("--capture-thread", is_flag=True,
              help="Build and store traces in a thread of the gateway process instead of a child process.")
@click.option("--students/--no-students", default=False, show_default=True,
              help="Serve promoted students (route per task, validate, fall back to the teacher).")
@config_option(GatewayConfig, "base_model", metavar="MODEL")
@click.option("--engine", type=click.Choice(["embedded", "vllm", "openai"]), default="embedded", show_default=True,
              help="Student engine: embedded (transformers + PEFT here), vllm (start or use a vLLM server "
                   "with --enable-lora), openai (any OpenAI-compatible server: llama.cpp, Ollama).")
@click.option("--engine-url", "--vllm-url", "engine_url", default=None, metavar="URL",
              help="Base URL of the student server for --engine vllm/openai (an existing vLLM OpenAI "
                   "server started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); with "
                   "vllm and no URL, protege starts one.")
@config_option(GatewayConfig, "engine_guided", type=click.Choice(["structured_outputs", "guided_grammar", "off"]))
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(teacher: str, host: str | None, port: int | None, db_url: str | None, teacher_key_env: str | None,
          redact: str | None, timeout_s: float, client: str, spool_path: str | None, durability: str, max_body_mb: float, open_metrics: bool,
          capture_thread: bool,
          students: bool, base_model: str | None, engine: str, engine_url: str | None, engine_guided: str | None,
          log_level: str) -> None:
    """Run the OpenAI-compatible gateway: point an agent's base_url at
    http://HOST:PORT/v1 and every call it makes is captured to the store.

    Gateway API keys (optional): PROTEGE_GATEWAY_KEYS=key1,key2 or `protege keys create`.
    """
    import logging
    from pathlib import Path

    from protege.capture.writer import WriterConfig
    from protege.config import default_db_url
    from protege.database import open_store
    from protege.gateway.app import create_app, load_redact
    from protege.gateway.server import serve as run
    from protege.store import StoreError, make_engine

    if not teacher.startswith(("http://", "https://")):
        raise UserError(f"--teacher must be an http(s) URL, got {teacher!r}")
    if engine_url is not None and not engine_url.startswith(("http://", "https://")):
        raise UserError(f"--engine-url must be an http(s) URL, got {engine_url!r}")
    url = db_url or default_db_url()
    try:
        make_engine(url).dispose()  # a malformed URL is a user mistake: say so now
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        load_redact(redact)
    except (ImportError, ValueError) as exc:
        raise UserError(f"--redact {redact}: {exc}") from None
    try:
        open_store(url).close()  # migrate now, and say early if the store is unreachable
    except StoreError as exc:
        # Serve anyway: traces spool to disk and are replayed when the store is back.
        logging.getLogger("protege.gateway").error("%s; capturing to the spool until it answers", exc)
    # Options left out keep the config's defaults (declared once, in GatewayConfig).
    given = {k: v for k, v in {"host": host, "port": port, "base_model": base_model}.items() if v is not None}
    cfg = GatewayConfig(teacher=teacher, **given, db_url=url, teacher_key_env=teacher_key_env,
                        redact=redact, timeout_s=timeout_s, client=client, capture_process=not capture_thread,
                        capture=WriterConfig(spool_path=Path(spool_path) if spool_path else None),
                        durability=durability, max_body_bytes=int(max_body_mb * 1024**2),
                        open_metrics=open_metrics,
                        students=students,
                        engine="embedded" if engine == "embedded" else "openai",
                        engine_url=engine_url, engine_vllm=engine == "vllm", engine_guided=engine_guided)
    vllm_proc = None
    if students and engine == "vllm" and not engine_url:
        from protege.engines.vllm import VllmError, start_vllm

        try:
            vllm_proc, cfg.engine_url = start_vllm(cfg.base_model)
        except VllmError as exc:
            raise UserError(str(exc)) from None
    elif students and engine != "embedded" and not engine_url:
        raise UserError(f"--engine {engine} needs --engine-url")
    store = None  # the gateway opens it (lazily, so an outage at start-up only spools)
    try:
        app = create_app(cfg, store=store)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"protege gateway on http://{cfg.host}:{cfg.port}/v1 -> {teacher} (store: {url.split('@')[-1]})", err=True)
    try:
        run(cfg, app=app, log_level=log_level)
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the signal after its graceful shutdown (traces already flushed)
    finally:
        if vllm_proc is not None:
            vllm_proc.terminate()
    click.echo("protege gateway stopped; captured traces flushed", err=True)
