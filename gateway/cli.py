"""The ``tuneloop`` command line (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.config import GatewayConfig, embedded_default
from gateway.settings import Settings

app = typer.Typer(help="TuneLoop: an OpenAI-compatible gateway for fine-tuned models.",
                  no_args_is_help=True, add_completion=False)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (or $TUNELOOP_CONFIG)")]


def load_settings(config: Path | None = None, **overrides: Any) -> tuple[Settings, GatewayConfig]:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if config is not None:
        settings.config = config
    cfg = GatewayConfig.load(settings.config) if settings.config else embedded_default(settings.engine_port)
    return settings, cfg


def resolve(config: Path | None = None, database_url: str | None = None,
            **overrides: object) -> tuple[Settings, GatewayConfig, str]:
    """Settings, config and database URL, found the same way by every command as by ``serve``:
    ``--database-url`` > ``$TUNELOOP_DATABASE_URL`` > the config's ``database_url`` > the home's SQLite
    (the config itself: ``--config`` > ``$TUNELOOP_CONFIG`` > the embedded default)."""
    from gateway import embedded
    from gateway.settings import database_url as configured_url

    settings, cfg = load_settings(config, **overrides)
    embedded.attach(settings, cfg)  # the engines a `serve` on this home started, and their key
    return settings, cfg, database_url or configured_url(settings, cfg)


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    engine_port: Annotated[int | None, typer.Option(help="embedded engine port (default: a free one)")] = None,
    workers: Annotated[int | None, typer.Option(help="gateway worker processes (default 1)")] = None,
) -> None:
    """Serve the gateway; with no config, the embedded default (local engine + SQLite)."""
    from gateway.serve import run

    settings, cfg = load_settings(config, host=host, port=port, engine_port=engine_port, workers=workers)
    run(settings, cfg)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def engine(
    ctx: typer.Context,
    host: str = "127.0.0.1",
    port: int = 8001,
    model: Annotated[str | None, typer.Option(
        help="local Hugging Face checkpoint folder (default: the embedded SmolLM2-135M-Instruct)")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="the model's id in the API (default: --model)")] = None,
    chat_template: Annotated[str | None, typer.Option(
        help="chat template file (or the template itself) instead of the checkpoint's")] = None,
    generation_config: Annotated[str | None, typer.Option(
        help="sampling defaults: auto (the model's generation_config.json), vllm (none) or a folder")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="context length (default: the model's)")] = None,
    enable_lora: Annotated[bool | None, typer.Option(
        "--enable-lora/--no-enable-lora", help="serve LoRA adapters (default: on without --model)")] = None,
    max_lora_rank: Annotated[int, typer.Option(help="largest LoRA rank an adapter may have")] = 16,
    lora_modules: Annotated[list[str] | None, typer.Option(
        help='adapters to load at start: name=path or {"name":..,"path":..,"base_model_name":..}')] = None,
    adapters: Annotated[Path | None, typer.Option(help="folder of LoRA adapters to load at start")] = None,
    max_loras: Annotated[int, typer.Option(help="adapters held in memory (LRU)")] = 8,
    max_cpu_loras: int = 64,
    max_batch: int = 32,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: chosen for the machine)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if present)")] = None,
    kv_cache_memory_bytes: Annotated[str | None, typer.Option(
        help="KV-cache budget, e.g. 4GiB (default: min(4 GiB, 25% of the memory))")] = None,
    trust_request_chat_template: Annotated[bool, typer.Option(
        help="let requests bring their own chat_template (rendered in a sandboxed child process)")] = False,
    scheduling_policy: Annotated[str, typer.Option(help="fair (round-robin across tenants) or fcfs")] = "fair",
    max_running_per_tenant: Annotated[int | None, typer.Option(
        help="running rows one tenant may hold while others wait (default: max batch // 2; 0: no cap)")] = None,
    enable_auto_tool_choice: Annotated[bool, typer.Option(
        help='tool_choice "auto": parse the tool calls the model writes (needs --tool-call-parser)')] = False,
    tool_call_parser: Annotated[str | None, typer.Option(help="how the model writes tool calls: hermes")] = None,
    api_key: Annotated[str | None, typer.Option(
        help="require this key (Authorization: Bearer) on all routes but /health, /metrics, /ping, /version; "
        "default $VLLM_API_KEY")] = None,
    allowed_lora_roots: Annotated[list[Path] | None, typer.Option(
        help="another folder load_lora_adapter may read (besides --adapters and $TUNELOOP_HOME/adapters)")] = None,
    enable_prompt_tokens_details: Annotated[bool, typer.Option(
        help="usage.prompt_tokens_details.cached_tokens: prompt tokens from the prefix cache")] = False,
    fd: Annotated[int | None, typer.Option(hidden=True, help="serve on this inherited listening socket")] = None,
    parent_pid: Annotated[int | None, typer.Option(hidden=True, help="stop when this process is gone")] = None,
) -> None:
    """Serve a base model (a local HF checkpoint, or the embedded SmolLM2-135M-Instruct) with LoRA adapters
    over vLLM's HTTP contract; the base-model flags are vLLM's (adapters/models/options.py)."""
    from adapters.engine.flags import check_flags
    from adapters.models.options import precheck

    check_flags(scheduling_policy, tool_call_parser, enable_auto_tool_choice)  # a bad command line: before torch
    precheck(model)  # an unsupported architecture is refused before torch loads
    from adapters.engine.admission import parse_bytes
    from adapters.engine.server import run_engine
    from adapters.models.options import with_model

    run_engine = with_model(run_engine, ctx.args, model=model, served_model_name=served_model_name,
                            generation_config=generation_config, max_model_len=max_model_len,
                            enable_lora=enable_lora, max_lora_rank=max_lora_rank, lora_modules=lora_modules,
                            chat_template=chat_template)
    run_engine(host=host, port=port, adapters_dir=adapters, home=Settings().resolved_home(),
               max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_batch=max_batch,
               threads=threads, device=device,
               kv_cache_memory_bytes=parse_bytes(kv_cache_memory_bytes) if kv_cache_memory_bytes else None,
               trust_request_chat_template=trust_request_chat_template, scheduling_policy=scheduling_policy,
               max_running_per_tenant=max_running_per_tenant, enable_auto_tool_choice=enable_auto_tool_choice,
               tool_call_parser=tool_call_parser, api_key=api_key, allowed_lora_roots=allowed_lora_roots, fd=fd,
               parent_pid=parent_pid, enable_prompt_tokens_details=enable_prompt_tokens_details)


# Sub-commands owned by other packages: (module, name, help). Each module exposes a typer
# `app` and keeps heavy imports (torch, transformers) inside its commands. The command line is
# the top of the stack: in gateway/ it alone imports ``adapters`` (tests/test_layers.py checks);
# the server reaches the training side through the database (gateway.job_queue) and child processes.
SUBCOMMANDS = [
    ("gateway.keys_cli", "keys", "API keys per project: create, list, revoke."),
    ("gateway.log.cli", "log", "The interaction log: prune."),
    ("adapters.datasets.cli", "dataset", "Build and validate training sets from the log."),
    ("adapters.training.cli", "jobs", "Fine-tuning jobs: list, show, cancel, resume; the job runner."),
    ("adapters.registry.cli", "adapters", "Adapter versions and their lineage: list, show."),
]


# Top-level commands owned by other packages: (module, function name, command name).
COMMANDS = [
    ("adapters.training.cli", "finetune", "finetune"),
    ("adapters.evaluation.cli", "eval_", "eval"),
    ("adapters.registry.cli", "promote", "promote"),
    ("adapters.registry.cli", "rollback", "rollback"),
    ("adapters.loop.cli", "loop", "loop"),
    ("adapters.loop.cli", "migrate", "migrate"),
    ("adapters.loop.demo", "demo", "demo"),
    ("gateway.costs_cli", "costs", "costs"),
    ("gateway.privacy_cli", "forget", "forget"),
    ("gateway.privacy_cli", "audit", "audit"),
]


def _add_subcommands() -> None:
    """Every command is imported plainly: a broken module fails at start, never a silently missing command."""
    import importlib

    for module, name, help_ in SUBCOMMANDS:
        app.add_typer(importlib.import_module(module).app, name=name, help=help_)
    for module, func, name in COMMANDS:
        app.command(name)(getattr(importlib.import_module(module), func))


_add_subcommands()


def main() -> None:
    from gateway.logs import configure

    configure()
    app()


if __name__ == "__main__":
    main()
