"""``python -m adapters.engine --port 8001 --adapters DIR``: serve the engine without the main CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.engine.admission import parse_bytes
from adapters.engine.server import run_engine


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m adapters.engine", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--adapters", type=Path, default=None, help="folder whose subfolders are peft LoRA adapters")
    ap.add_argument("--home", type=Path, default=None, help="data folder (default $TUNELOOP_HOME or ./.tuneloop)")
    ap.add_argument("--max-loras", type=int, default=8, help="distinct adapters per batch")
    ap.add_argument("--max-cpu-loras", type=int, default=64, help="adapters held in memory (LRU)")
    ap.add_argument("--max-batch", type=int, default=32, help="sequences in the running batch")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: cores // 2)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--kv-cache-memory-bytes", type=parse_bytes, default=None,
                    help="KV-cache budget, e.g. 4GiB (default: min(4 GiB, 25%% of the memory))")
    ap.add_argument("--trust-request-chat-template", action="store_true",
                    help="let requests bring their own chat_template (rendered in a sandboxed child process)")
    ap.add_argument("--scheduling-policy", choices=["fair", "fcfs"], default="fair",
                    help="fair: round-robin across tenants (x-tuneloop-tenant, else user); fcfs: one FIFO")
    ap.add_argument("--max-running-per-tenant", type=int, default=None,
                    help="running rows one tenant may hold while others wait (default: max batch // 2; 0: no cap)")
    ap.add_argument("--enable-auto-tool-choice", action="store_true",
                    help='tool_choice "auto": parse the calls the model writes (needs --tool-call-parser)')
    ap.add_argument("--tool-call-parser", choices=["hermes"], default=None, help="how tool calls are written")
    ap.add_argument("--api-key", default=None,
                    help="require this key on all routes but /health, /metrics, /ping, /version ($VLLM_API_KEY)")
    ap.add_argument("--allowed-lora-roots", type=Path, nargs="*", default=None,
                    help="more folders load_lora_adapter may read (besides --adapters and $TUNELOOP_HOME/adapters)")
    ap.add_argument("--enable-prompt-tokens-details", action="store_true",
                    help="usage.prompt_tokens_details.cached_tokens: prompt tokens from the prefix cache")
    a = ap.parse_args(argv)
    run_engine(host=a.host, port=a.port, adapters_dir=a.adapters, home=a.home, max_loras=a.max_loras,
               max_cpu_loras=a.max_cpu_loras, max_batch=a.max_batch, threads=a.threads, device=a.device,
               kv_cache_memory_bytes=a.kv_cache_memory_bytes,
               trust_request_chat_template=a.trust_request_chat_template, scheduling_policy=a.scheduling_policy,
               max_running_per_tenant=a.max_running_per_tenant, enable_auto_tool_choice=a.enable_auto_tool_choice,
               tool_call_parser=a.tool_call_parser, api_key=a.api_key, allowed_lora_roots=a.allowed_lora_roots,
               enable_prompt_tokens_details=a.enable_prompt_tokens_details)


if __name__ == "__main__":
    main()
