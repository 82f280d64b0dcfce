"""Where the engine's decode step spends its time (measurement only: the engine's code is not changed).

Two parts, on the embedded SmolLM2-135M-Instruct (fp32), 1 and 2 torch threads:

``forward``: the pure batched forward (``adapters/engine/forward.py``'s ``BatchedLlama.forward``) in this
process, no server: after a prefill of 1, 8 or 32 support prompts (~100 tokens), the median time of a
decode step (positions ~100-160), with and without a LoRA batch; the "GEMM floor" (the step's 121
projections, ``x @ W.T`` at the same shapes, and nothing else; also with bfloat16 copies of the weights,
and with fp32 copies stored transposed, ``x @ Wt``);
the step's aten ops counted with
``torch.profiler`` and its self time grouped into matrix products vs everything else.

``served``: ``python -m adapters.engine``'s ``run_engine`` in a child process with timers wrapped around
the scheduler's pieces (forward, sampling, detokenization, the token events, retiring, the loop's other
work), driven over HTTP at concurrency 1, 8, 32 (streamed, 64 tokens, ``ignore_eos``, as in
``engine_vs_llamacpp.py``); per phase: ms per decode step and its parts, rows per step, each thread's CPU
time (scheduler vs the event loop that serves HTTP), and the scheduler thread's CPU time inside the
forward against its wall time (waiting for the GIL or a core shows as the gap).  ``--py-spy PATH``
samples the child with py-spy (installed outside the project venv) during the c8 phase.

    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/engine_profile.py forward [--threads 1,2]
    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/engine_profile.py served [--threads 1,2] \
        [--py-spy /tmp/pyspy/bin/py-spy]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "loadtests"))

ADAPTER_DIR = Path(os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")) / "lora-r8"


def _prompts(tok: Any, n: int) -> list[list[int]]:
    from engine_vs_llamacpp import PROMPTS

    return [tok.apply_chat_template([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                    add_generation_prompt=True, tokenize=True, return_dict=False)
            for i in range(n)]


# -- forward -------------------------------------------------------------------------------------------
def forward_bench(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from adapters.engine.forward import BatchedLlama
    from adapters.engine.lora import LoraBatch, read_adapter
    from adapters.engine.model import open_served_model

    served = open_served_model(None, home=a.home)
    model = BatchedLlama(served.ckpt, torch.float32, torch.device("cpu"), served.max_len)
    tok = served.ckpt.tokenizer
    lw = read_adapter("lora-r8", ADAPTER_DIR, model.lora_shapes, model.n_layers, torch.float32,
                      torch.device("cpu")) if (ADAPTER_DIR / "adapter_config.json").exists() else None
    out: dict[str, Any] = {}
    bf16, nn = _copies(model, "bf16"), _copies(model, "nn")
    for threads in a.threads:
        torch.set_num_threads(threads)
        for n in a.batches:
            prompts = _prompts(tok, n)
            for lora_on in ([False, True] if lw is not None else [False]):
                lora = LoraBatch([lw] * n, torch.float32, torch.device("cpu")) if lora_on else None
                key = f"t{threads} b{n}{' lora' if lora_on else ''}"
                out[key] = _decode_timing(model, prompts, lora, a.steps)
                print(key, {k: v for k, v in out[key].items() if k != "ops"}, flush=True)
            out[f"t{threads} b{n} gemm floor"] = _gemm_floor(model, n, a.steps)
            out[f"t{threads} b{n} gemm floor bf16"] = _gemm_floor(model, n, a.steps, bf16=bf16)
            out[f"t{threads} b{n} gemm floor nn"] = _gemm_floor(model, n, a.steps, nn=nn)
            print(f"t{threads} b{n} gemm floor", out[f"t{threads} b{n} gemm floor"], "bf16",
                  out[f"t{threads} b{n} gemm floor bf16"], "transposed", out[f"t{threads} b{n} gemm floor nn"],
                  flush=True)
            if a.json:  # as it goes: a long run keeps what it measured
                a.json.write_text(json.dumps(out, indent=1))
        out[f"t{threads} profile b1"] = _op_profile(model, _prompts(tok, 1))
        out[f"t{threads} profile b32"] = _op_profile(model, _prompts(tok, 32))
        print(f"t{threads} profile", out[f"t{threads} profile b1"]["summary"],
              out[f"t{threads} profile b32"]["summary"], flush=True)
    return out


def _prefill(model: Any, prompts: list[list[int]], lora: Any) -> tuple[Any, Any]:
    import torch

    n, T = len(prompts), max(len(p) for p in prompts)
    model.cache.shrink()
    model.cache.ensure(n, T + 256)
    toks = torch.zeros(n, T, dtype=torch.long)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = torch.tensor(p)
    last = torch.tensor([len(p) - 1 for p in prompts])
    logits = model.forward(toks, torch.zeros(n, dtype=torch.long), 0, lora, last)
    return logits.argmax(-1), torch.tensor([len(p) for p in prompts])


def _decode_timing(model: Any, prompts: list[list[int]], lora: Any, steps: int) -> dict[str, Any]:
    nxt, pos = _prefill(model, prompts, lora)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logits = model.forward(nxt[:, None], pos, 0, lora)
        nxt = logits.argmax(-1)  # greedy, as the sampler's plain path
        times.append(time.perf_counter() - t0)
        pos = pos + 1
    times = times[3:]
    return {"ms_step_p50": statistics.median(times) * 1e3, "ms_step_min": min(times) * 1e3,
            "tok_s": len(prompts) / statistics.median(times)}


def _gemm_floor(model: Any, n: int, steps: int, bf16: Any = None, nn: Any = None) -> dict[str, float]:
    """The decode step's matrix products alone: 4 per layer (qkv, o, gate+up, down) and the lm_head.

    ``bf16``: the same with bfloat16 copies of the weights (``_copies``), to size what a smaller dtype
    would save (the engine keeps fp32 on CPU for batch-invariant greedy outputs; see results/engine.md).
    ``nn``: fp32 copies stored transposed (``[in, out]``, contiguous), multiplied as ``x @ Wt``."""
    import torch

    dt = torch.bfloat16 if bf16 is not None else torch.float32
    weights = bf16 or nn or ([(x.wqkv, x.wo, x.wgu, x.wd) for x in model.layers], model.lm_head)
    h = torch.randn(n, 1, model.hidden, dtype=dt)
    a = torch.randn(n, 1, model.q_dim, dtype=dt)
    m = torch.randn(n, 1, model.intermediate, dtype=dt)
    layers, lm_head = weights

    def mm(x: Any, w: Any) -> Any:
        return x @ w if nn is not None else x @ w.T

    times = []
    with torch.inference_mode():
        for _ in range(steps):
            t0 = time.perf_counter()
            for wqkv, wo, wgu, wd in layers:
                mm(h, wqkv)
                mm(a, wo)
                mm(h, wgu)
                mm(m, wd)
            mm(h[:, -1], lm_head)
            times.append(time.perf_counter() - t0)
    times = times[3:]
    lm = []
    with torch.inference_mode():
        for _ in range(steps):
            t0 = time.perf_counter()
            mm(h[:, -1], lm_head)
            lm.append(time.perf_counter() - t0)
    return {"ms_p50": statistics.median(times) * 1e3, "lm_head_ms_p50": statistics.median(lm[3:]) * 1e3}


def _copies(model: Any, how: str) -> Any:
    """The projection weights as bfloat16 (``bf16``) or transposed fp32 (``nn``) copies."""
    import torch

    def conv(w: Any) -> Any:
        return w.to(torch.bfloat16) if how == "bf16" else w.T.contiguous()

    return ([tuple(conv(w) for w in (x.wqkv, x.wo, x.wgu, x.wd)) for x in model.layers], conv(model.lm_head))


def _op_profile(model: Any, prompts: list[list[int]], steps: int = 5) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    nxt, pos = _prefill(model, prompts, None)
    for _ in range(2):
        nxt = model.forward(nxt[:, None], pos, 0, None).argmax(-1)
        pos = pos + 1
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            nxt = model.forward(nxt[:, None], pos, 0, None).argmax(-1)
            pos = pos + 1
    top = [e for e in prof.events() if e.cpu_parent is None]
    by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for e in top:
        by_name[e.name][0] += 1
        by_name[e.name][1] += e.cpu_time_total
    gemm = {"aten::matmul", "aten::mm", "aten::addmm", "aten::bmm", "aten::linear"}
    total = sum(v[1] for v in by_name.values())
    g = sum(v[1] for k, v in by_name.items() if k in gemm)
    ops = sorted(((k, v[0] / steps, v[1] / steps / 1e3) for k, v in by_name.items()), key=lambda x: -x[2])
    return {"summary": {"top_level_ops_per_step": len(top) / steps, "profiled_ms_per_step": total / steps / 1e3,
                        "matmul_ms_per_step": g / steps / 1e3,
                        "matmul_ops_per_step": sum(v[0] for k, v in by_name.items() if k in gemm) / steps},
            "ops": [{"op": k, "calls_per_step": c, "ms_per_step": ms} for k, c, ms in ops[:25]]}


# -- served ----------------------------------------------------------------------------------------------
class Stats:
    """Timers the child's patched methods add to; dumped and reset on SIGUSR1."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.t: dict[str, float] = collections.defaultdict(float)
        self.n: dict[str, int] = collections.defaultdict(int)
        self.rows: list[int] = []
        self.step_starts: list[float] = []
        self.cpu0 = _thread_cpu()
        self.wall0 = time.monotonic()

    def add(self, key: str, dt: float) -> None:
        self.t[key] += dt
        self.n[key] += 1


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process (named by Python's thread names where known)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = collections.defaultdict(float)
    for d in Path("/proc/self/task").iterdir():
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(d.name), "other (torch pool, template workers, ...)")
        if name.startswith("asyncio_") or name.startswith("ThreadPoolExecutor"):
            name = "template/tokenizer workers"
        out[name] += (int(f[11]) + int(f[12])) / tick
    return out


def child(a: argparse.Namespace) -> None:
    """Run the engine with timers (this is the child process of ``served``)."""
    from adapters.engine import steps as steps_mod
    from adapters.engine.forward import BatchedLlama
    from adapters.engine.scheduler import Scheduler
    from adapters.engine.sequence import Sequence
    from adapters.engine.server import run_engine

    st = Stats()

    def timed(key: str, fn: Any, cpu: bool = False) -> Any:
        def wrapper(*args: Any, **kw: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                st.add(key, time.perf_counter() - t0)
                if cpu:
                    st.add(key + " (scheduler thread CPU)", time.thread_time() - c0)
        return wrapper

    fwd = BatchedLlama.forward

    def forward(self: Any, tokens: Any, *args: Any, **kw: Any) -> Any:
        key = "forward decode" if tokens.shape[1] == 1 else "forward prefill"
        if tokens.shape[1] == 1:
            st.rows.append(int(tokens.shape[0]))
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fwd(self, tokens, *args, **kw)
        finally:
            st.add(key, time.perf_counter() - t0)
            st.add(key + " (scheduler thread CPU)", time.thread_time() - c0)

    BatchedLlama.forward = forward  # type: ignore[method-assign]
    decode = Scheduler._decode

    def decode_step(self: Any) -> None:
        st.step_starts.append(time.perf_counter())
        return timed("decode step (all)", decode, cpu=True)(self)

    Scheduler._decode = decode_step  # type: ignore[method-assign]
    for name in ("_prefill", "_admit", "_drain", "_report", "_retire", "_size_cache", "_accept", "_lora_for"):
        setattr(Scheduler, name, timed(name, getattr(Scheduler, name)))
    steps_mod.sample = timed("sample", steps_mod.sample)
    steps_mod.logprobs = timed("logprobs", steps_mod.logprobs)
    Sequence.append = timed("Sequence.append (detokenize, stops)", Sequence.append)  # type: ignore[method-assign]

    dump_path = Path(a.dump)

    def on_usr1(signum: int, frame: Any) -> None:
        with st.lock:
            cpu = _thread_cpu()
            gaps = [b - x for x, b in zip(st.step_starts, st.step_starts[1:], strict=False)]
            data = {"t": dict(st.t), "n": dict(st.n), "rows": st.rows, "wall": time.monotonic() - st.wall0,
                    "cpu": {k: v - st.cpu0.get(k, 0.0) for k, v in cpu.items()},
                    "step_period_p50": statistics.median(gaps) if gaps else None}
            tmp = dump_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, dump_path)
            st.reset()

    signal.signal(signal.SIGUSR1, on_usr1)
    adapters = Path(tempfile.mkdtemp(prefix="profile-adapters-"))
    if (ADAPTER_DIR / "adapter_config.json").exists():
        (adapters / "lora-r8").symlink_to(ADAPTER_DIR)
    run_engine(host="127.0.0.1", port=a.port, adapters_dir=adapters, home=a.home, threads=a.child_threads,
               max_batch=32)


def served_bench(a: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from engine_vs_llamacpp import free_port, phase

    out: dict[str, Any] = {}
    for threads in a.threads:
        port = free_port()
        dump = Path(tempfile.mkdtemp(prefix="profile-")) / "dump.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNELOOP_HOME": str(a.home), "TUNELOOP_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, __file__, "child", "--port", str(port), "--child-threads",
                                 str(threads), "--dump", str(dump), "--home", str(a.home)], env=env, cwd=REPO)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("engine did not start")
                time.sleep(0.3)
            asyncio.run(phase(url, "smollm2-135m-instruct", 1, 1, 8))

            for model in ["smollm2-135m-instruct"] + (["lora-r8"] if a.lora else []):
                for conc, count in ((1, 4), (8, 16), (32, 32)):
                    collect(proc, dump)  # reset
                    spy = None
                    if a.py_spy and conc == 8 and model == "smollm2-135m-instruct":
                        spy = subprocess.Popen([a.py_spy, "record", "--pid", str(proc.pid), "--rate", "250",
                                                "--format", "raw", "--threads", "--nonblocking", "--output",
                                                str(Path(a.py_spy_out) / f"pyspy-t{threads}-c8.txt"),
                                                "--duration", "12"], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
                    c0 = time.process_time()
                    cell, _ = asyncio.run(phase(url, model, conc, count, 64))
                    client_cpu = time.process_time() - c0
                    if spy is not None:
                        spy.wait(timeout=60)
                    d = collect(proc, dump)
                    key = f"t{threads} c{conc}{' lora' if model != 'smollm2-135m-instruct' else ''}"
                    out[key] = summarize(d, vars(cell), client_cpu)
                    print(key, json.dumps(out[key]), flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


def collect(proc: subprocess.Popen[bytes], dump: Path) -> dict[str, Any]:
    """Have the child dump its timers (and reset them); return the dump."""
    dump.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    for _ in range(100):
        if dump.exists():
            return json.loads(dump.read_text())
        time.sleep(0.05)
    raise SystemExit("no dump from the engine")


def summarize(d: dict[str, Any], cell: dict[str, Any], client_cpu: float) -> dict[str, Any]:
    steps = d["n"].get("decode step (all)", 0) or 1
    tokens = sum(d["rows"])
    per = {k: v / steps * 1e3 for k, v in d["t"].items()}
    rows = d["rows"]
    return {"decode_steps": steps, "rows_per_step_mean": tokens / steps if rows else 0,
            "ms_per_step": {k: round(v, 2) for k, v in sorted(per.items(), key=lambda x: -x[1])},
            "step_period_p50_ms": (d["step_period_p50"] or 0) * 1e3,
            "wall_s": d["wall"], "thread_cpu_s": {k: round(v, 2) for k, v in d["cpu"].items() if v > 0.005},
            "client_cpu_s": round(client_cpu, 2), "tok_s": cell["tok_s"], "ttft_p50_ms": cell["ttft_p50"] * 1e3,
            "ms_tok_p50": cell["ms_tok_p50"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["forward", "served", "child"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,8,32", help="forward: batch sizes")
    ap.add_argument("--steps", type=int, default=40, help="decode steps timed per forward cell")
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("TUNELOOP_HOME", REPO / ".tuneloop")))
    ap.add_argument("--lora", action="store_true", help="served: also the LoRA adapter's phases")
    ap.add_argument("--py-spy", default=None, help="served: py-spy binary; samples the c8 phase")
    ap.add_argument("--py-spy-out", default="/tmp")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--child-threads", type=int, default=1)
    ap.add_argument("--dump", default="")
    a = ap.parse_args()
    a.home = a.home.resolve()
    a.threads = [int(t) for t in a.threads.split(",")]
    a.batches = [int(b) for b in a.batches.split(",")]
    if a.part == "child":
        child(a)
        return
    out = forward_bench(a) if a.part == "forward" else served_bench(a)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
