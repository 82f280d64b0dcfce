"""The layers point down: nothing under gateway/ imports ``adapters`` (the training side, the engine),
except the command line, the top of the stack that registers every package's commands. The gateway
reaches training through the database (the job queue rows, ``gateway.job_queue``) and child
processes started by module name (``python -m adapters.training.runner``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"gateway/cli.py"}


def _is_adapters(name: str | None) -> bool:
    return name is not None and (name == "adapters" or name.startswith("adapters."))


def upward_imports(source: str) -> list[str]:
    """``line: module`` for each import of ``adapters`` (plain, from, ``importlib.import_module("...")``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str | None] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{node.lineno}: {n}" for n in names if _is_adapters(n)]
    return found


def test_the_detector_sees_every_form_of_import() -> None:
    source = ("import adapters.training.service\nfrom adapters.training import runner\n"
              "import importlib\nimportlib.import_module('adapters.loop')\n"
              "from gateway.store import jobs\nfrom .adapters import x\nCMD = ['-m', 'adapters.training.runner']\n")
    assert upward_imports(source) == ["1: adapters.training.service", "2: adapters.training",
                                      "4: adapters.loop"]


def test_no_gateway_module_but_the_cli_imports_adapters() -> None:
    offenders = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in ALLOWED:
            offenders += [f"{rel}:{hit}" for hit in upward_imports(path.read_text())]
    assert not offenders, "gateway modules importing adapters (reach training through the jobs table):\n" + \
        "\n".join(offenders)


def _printed(code: str, *args: str) -> str:
    """The last line ``python -c code args`` prints, in a fresh interpreter (what a process imports)."""
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_the_running_gateway_loads_no_adapters_module(tmp_path: Path) -> None:
    """What the server process imports (every router, the serve loop), not only what the files say."""
    code = ("import sys; from gateway.app import create_app; from gateway.serve import run; "
            "from gateway.settings import Settings; from gateway.config import embedded_default; "
            "create_app(Settings(home=sys.argv[1]), embedded_default(8001)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('adapters', 'openai', 'torch')))")
    # nor the openai SDK (loaded when an openai target is made) nor torch: the embedded default routes to neither
    assert _printed(code, str(tmp_path)) == "[]"


def test_the_log_writer_child_and_the_cli_load_no_router_sdk_or_torch() -> None:
    """The log writer child is started with every gateway (and again whenever it dies), the CLI for every
    command: each loads only what it uses (a second of start-up each, measured, when they did not)."""
    code = ("import sys; import gateway.log.child, gateway.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'torch', 'transformers') "
            "or m in ('gateway.router', 'gateway.app')))")
    assert _printed(code) == "[]"


def test_the_engine_loads_no_transformers_model_class() -> None:
    """The engine runs its own forward: transformers' model classes (``modeling_utils``, with ``torch._dynamo``
    behind them) are for building the model cache and for training, and cost every engine start 0.6 s of CPU."""
    code = ("import sys; import adapters.engine.__main__; "
            "print(sorted(m for m in sys.modules if m in ('transformers.modeling_utils', 'torch._dynamo')))")
    assert _printed(code) == "[]"
