"""The engine's flag combinations, checked before anything heavy loads: a command line that cannot run fails
in a second, not after torch and the model have loaded (``tuneloop engine`` checks them first, and
``run_engine`` again for ``python -m adapters.engine``). Standard library only."""

from __future__ import annotations


def check_flags(scheduling_policy: str, tool_call_parser: str | None, enable_auto_tool_choice: bool) -> None:
    if scheduling_policy not in ("fair", "fcfs"):
        raise SystemExit(f"--scheduling-policy must be fair or fcfs, got {scheduling_policy!r}")
    if tool_call_parser not in (None, "hermes") or (enable_auto_tool_choice and tool_call_parser is None):
        raise SystemExit("--enable-auto-tool-choice needs --tool-call-parser hermes (the one parser this engine has)")
