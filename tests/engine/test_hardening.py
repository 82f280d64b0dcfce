"""Issue "Hardening", engine side: no request takes the engine down for the other tenants.

Each engine-killer of the issue gets a 4xx naming the field, and a normal request right after gets 200 from a
healthy engine.  Against real engines on loopback: the session engine (``engine_server``: untrusted
templates, 4 GiB KV budget) and a small one started here (64 MiB KV budget, max batch 4, request templates
trusted, a 10 s template deadline so that "another request completes meanwhile" holds on a loaded
machine) where the budget, slow templates, a faulty adapter's rows and fair queueing are cheap to reach.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file, save_file

from tests.fixtures import engine as fx

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "What is the capital of France?"}]
SMALL_KV = 64 << 20


def chat(url: str, headers: dict[str, str] | None = None, timeout: float = 600, **body) -> httpx.Response:
    body = {"messages": HI, "max_tokens": 5, "temperature": 0, **body}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def assert_still_serving(url: str) -> None:
    r = chat(url)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert httpx.get(url + "/health").status_code == 200


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def start_engine(log_name: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = fx._free_port()
    full_env = {**os.environ, "TUNELOOP_HOME": str(fx.test_home()), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", **(env or {})}
    log = open(fx.test_home() / f"{log_name}-{port}.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen([sys.executable, "-m", "adapters.engine", "--port", str(port), "--threads", "1",
                             "--allowed-lora-roots", tempfile.gettempdir(), *args],
                            cwd=fx.REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, f"engine exited with {proc.returncode}; see {log.name}"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"engine did not start; see {log.name}"
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def small(test_adapters) -> Iterator[str]:
    proc, url = start_engine("engine-small", "--kv-cache-memory-bytes", str(SMALL_KV), "--max-batch", "4",
                             "--trust-request-chat-template", "--adapters", str(test_adapters.root),
                             "--max-loras", "2", env={"TUNELOOP_ENGINE_TEMPLATE_TIMEOUT_S": "10"})
    yield url
    stop(proc)


# -- the engine-killers, on the session engine ---------------------------------------------------
KILLERS = [
    ({"repetition_penalty": 1e-40}, "repetition_penalty"),
    ({"repetition_penalty": "nan"}, "repetition_penalty"),
    ({"seed": 18446744073709551615, "n": 2}, "seed"),
    ({"chat_template_kwargs": {"chat_template": "{% if false %}x{% endif %}"}}, "chat_template_kwargs.chat_template"),
    ({"chat_template_kwargs": {"truncation": True, "max_length": 0}}, "chat_template_kwargs.truncation"),
    ({"chat_template_kwargs": {"return_tensors": "pt"}}, "chat_template_kwargs.return_tensors"),
    ({"chat_template": "{{ messages }}"}, "chat_template"),
    ({"temperature": "inf"}, "temperature"),
    ({"top_p": "NaN"}, "top_p"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": "-Infinity"}, "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"n": 0}, "n"),
    ({"max_tokens": 1 << 64}, "max_tokens"),
    ({"seed": -(1 << 63) - 1}, "seed"),
    ({"min_tokens": 9}, "min_tokens"),
]


@pytest.mark.parametrize(("extra", "param"), KILLERS, ids=[p for _, p in KILLERS])
def test_engine_killer_is_a_400_and_the_engine_serves_on(engine_server, extra, param):
    r = chat(engine_server.root_url, **extra)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param, err
    assert_still_serving(engine_server.root_url)


@pytest.mark.parametrize(("raw", "param"), [('"min_p": 1e309', None), ('"temperature": NaN', None),
                                            ('"top_p": -Infinity', None)])
def test_non_finite_json_literals_are_400s(engine_server, raw, param):
    body = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, ' + raw + "}"
    r = httpx.post(engine_server.base_url + "/chat/completions", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert_still_serving(engine_server.root_url)


def test_vllm_wording(engine_server):
    r = chat(engine_server.root_url, repetition_penalty=-1)
    assert r.json()["error"]["message"] == "repetition_penalty must be greater than zero, got -1.0."
    r = chat(engine_server.root_url, chat_template="x")
    assert "--trust-request-chat-template is not set" in r.json()["error"]["message"]


def test_extreme_but_valid_values_are_served(engine_server):
    r = chat(engine_server.root_url, seed=(1 << 63) - 1, n=2, temperature=1.0)  # seed + 1 wraps for choice 1
    assert r.status_code == 200 and len(r.json()["choices"]) == 2
    r = chat(engine_server.root_url, seed=-(1 << 63), repetition_penalty=1e-30, temperature=1.0)
    assert r.status_code == 200, r.text
    r = chat(engine_server.root_url, chat_template_kwargs={"enable_thinking": False, "add_generation_prompt": True})
    assert r.status_code == 200, r.text


# -- the KV budget, on the small engine ----------------------------------------------------------------
def test_n16_long_prompt_beyond_the_kv_budget_is_a_400(engine_server):
    # the case: n=16 with a ~6,400-token prompt asked for 6 GB of KV on a 4 GiB engine
    long = [{"role": "user", "content": "hello " * 6400}]
    r = chat(engine_server.root_url, messages=long, n=16)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "kv_cache_exceeded" and err["param"] == "n" and "--kv-cache-memory-bytes" in err["message"]
    assert_still_serving(engine_server.root_url)


def test_small_kv_budget_caps_the_context_and_refuses_what_never_fits(small):
    context = httpx.get(small + "/v1/models").json()["data"][0]["max_model_len"]
    assert 64 <= context < 8192  # capped at what one row of 64 MiB holds
    long = [{"role": "user", "content": "hello " * (context // 3)}]
    r = chat(small, messages=long, n=4)
    assert r.status_code == 400 and r.json()["error"]["code"] == "kv_cache_exceeded", r.text
    assert_still_serving(small)
    r = chat(small, messages=long, n=2)
    assert r.status_code == 200 and len(r.json()["choices"]) == 2, r.text
    r = chat(small, max_tokens=context)
    assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"], r.text


def test_the_cache_never_grows_past_its_budget(small):
    # One row runs at a capacity of 256 positions; two rows of 320 join: doubling would make three rows of 512
    # (70.8 MB), over the 64 MiB budget; the cache takes the 448 that fit instead.
    first: dict[str, httpx.Response] = {}
    runner = threading.Thread(target=lambda: first.setdefault("r", chat(
        small, messages=[{"role": "user", "content": "hello " * 170}], max_tokens=60, ignore_eos=True)))
    runner.start()
    deadline = time.monotonic() + 300
    while metric(small, "vllm:num_requests_running") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    joiners: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: joiners.append(chat(
        small, messages=[{"role": "user", "content": "hello " * 250}], max_tokens=8))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in [runner, *threads]:
        t.join()
    assert [r.status_code for r in [first["r"], *joiners]] == [200] * 3
    peak = metric(small, "tuneloop:engine_kv_cache_peak_bytes")
    assert 0 < peak <= SMALL_KV


# -- chat templates: a request's own template is sandboxed, bounded, off the event loop -----------------
def test_empty_prompt_is_a_400(small):
    for extra in ({"chat_template": "{% if false %}x{% endif %}"},
                  {"chat_template_kwargs": {"chat_template": "{% if false %}x{% endif %}"}}):
        r = chat(small, **extra)
        assert r.status_code == 400 and r.json()["error"]["message"] == "The decoder prompt cannot be empty", r.text
    assert_still_serving(small)
    r = chat(small, chat_template="{% for m in messages %}{{ m.content }}{% endfor %}\n")
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] < 12, r.text


def test_slow_template_times_out_while_another_request_completes(small):
    slow: dict[str, httpx.Response] = {}
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    t = threading.Thread(target=lambda: slow.setdefault("r", chat(small, chat_template=loops)))
    t.start()
    time.sleep(0.5)
    assert_still_serving(small)
    assert t.is_alive(), "the slow template should still be rendering"
    t.join()
    r = slow["r"]
    assert r.status_code == 400 and "took longer than" in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"] == "chat_template"


@pytest.mark.parametrize("bomb", ['{{ "x" * 1000000000 }}', '{{ "{:>2000000000}".format(1) }}',
                                  "{{ 10 ** 100000000 }}", "{{ ''.__class__.__mro__ }}"])
def test_template_bombs_are_400s(small, bomb):
    r = chat(small, chat_template=bomb)
    assert r.status_code == 400, r.text
    assert_still_serving(small)


# -- a request's fault is that request's -------------------------------------------------------------
def nan_adapter(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    weights = load_file(dest / "adapter_model.safetensors")
    for name, w in weights.items():
        if "lora_B" in name:
            w.fill_(float("nan"))
    save_file(weights, dest / "adapter_model.safetensors")
    return dest


def test_a_faulty_rows_request_fails_alone(small, test_adapters, tmp_path):
    path = nan_adapter(test_adapters.paths["t1"], tmp_path / "nan")
    r = httpx.post(small + "/v1/load_lora_adapter", json={"lora_name": "nan", "lora_path": str(path)})
    assert r.status_code == 200, r.text
    failed = metric(small, "tuneloop:engine_failed_requests_total")
    alone = chat(small, max_tokens=32, ignore_eos=True).json()["choices"][0]["message"]["content"]
    out: dict[str, httpx.Response] = {}
    mates = [threading.Thread(target=lambda i=i: out.setdefault(f"base{i}", chat(small, max_tokens=32,
                                                                                 ignore_eos=True)))
             for i in range(2)]
    for t in mates:
        t.start()
    time.sleep(0.2)  # the batch-mates are running
    out["nan"] = chat(small, model="nan")
    for t in mates:
        t.join()
    assert out["nan"].status_code == 500 and "engine failure in this request" in out["nan"].text
    for i in range(2):
        assert out[f"base{i}"].json()["choices"][0]["message"]["content"] == alone
    assert metric(small, "tuneloop:engine_failed_requests_total") == failed + 1
    assert_still_serving(small)


# -- fair queueing --------------------------------------------------------------------------------
def first_token_at(url: str, stamps: dict[str, float], key: str, headers: dict[str, str] | None = None,
                   **extra) -> None:
    body = {"messages": HI, "max_tokens": 16, "temperature": 0, "ignore_eos": True, "stream": True, **extra}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and key not in stamps:
                ch = json.loads(line[6:])
                if ch["choices"] and ch["choices"][0]["delta"].get("content"):
                    stamps[key] = time.monotonic()


def test_another_tenant_does_not_wait_behind_a_busy_one(small):
    stamps: dict[str, float] = {}
    busy = [threading.Thread(target=first_token_at, args=(small, stamps, f"a{i}", {"x-tuneloop-tenant": "a"}))
            for i in range(12)]  # max batch 4: three waves of tenant a
    for t in busy:
        t.start()
    deadline = time.monotonic() + 120
    while len(stamps) < 4 or metric(small, "vllm:num_requests_waiting") < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other = threading.Thread(target=first_token_at, args=(small, stamps, "b", None), kwargs={"user": "b"})
    other.start()
    for t in [*busy, other]:
        t.join()
    # first come, first served would put b after all twelve; fair queueing admits it at the next free row,
    # ahead of at least the last wave of a's (even if a wave ended just before b arrived)
    after = sorted(k for k in stamps if k != "b" and stamps[k] > stamps["b"])
    assert len(after) >= 3, (stamps, after)


# -- if the scheduler dies anyway, the engine exits non-zero (for a supervisor to restart it) -------------
def test_scheduler_death_exits_nonzero():
    # No request can kill the scheduler any more, so the crash is injected (test-only environment hook).
    proc, url = start_engine("engine-fault", "--kv-cache-memory-bytes", str(SMALL_KV),
                             env={"TUNELOOP_ENGINE_FAULT": "scheduler"})
    try:
        r = chat(url)
        assert r.status_code == 500 and "engine failure" in r.text
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
