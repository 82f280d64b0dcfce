"""``python -m adapters.engine --port 8001 --adapters DIR``: serve the engine without the main CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    a = ap.parse_args(argv)
    run_engine(host=a.host, port=a.port, adapters_dir=a.adapters, home=a.home, max_loras=a.max_loras,
               max_cpu_loras=a.max_cpu_loras, max_batch=a.max_batch, threads=a.threads, device=a.device)


if __name__ == "__main__":
    main()
