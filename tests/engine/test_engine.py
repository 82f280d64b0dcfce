"""The real engine over loopback, driven with the official ``openai`` SDK (vLLM's contract)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from adapters.engine.model import BASE_MODEL_NAME, cache_dir
from tests.fixtures.engine import EXTRA, OTHER_BASE

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Name three colors.", "Write a haiku about the sea."]
MAX = 12


@pytest.fixture(scope="module")
def client(engine_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, model: str, prompt: str, max_tokens: int = MAX, **kw) -> str:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       temperature=0, max_tokens=max_tokens, **kw)
    return r.choices[0].message.content or ""


def stream_text(client: openai.OpenAI, model: str, prompt: str, max_tokens: int = MAX) -> str:
    parts = []
    with client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                        temperature=0, max_tokens=max_tokens, stream=True) as s:
        for ch in s:
            for c in ch.choices:
                parts.append(c.delta.content or "")
    return "".join(parts)


def metric(engine_server, name: str) -> float:
    text = httpx.get(engine_server.root_url + "/metrics").text
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


@pytest.fixture(scope="module")
def alone(client, engine_server) -> dict[tuple[str, str], str]:
    """Greedy replies computed one request at a time: the reference for batched runs."""
    out = {}
    for model in [BASE_MODEL_NAME] + engine_server.adapters:
        for p in PROMPTS[:2]:
            out[(model, p)] = ask(client, model, p)
    return out


def test_models_list_like_vllm(client, engine_server):
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) >= {BASE_MODEL_NAME, *engine_server.adapters}
    base = cards[BASE_MODEL_NAME].model_dump()
    assert base["owned_by"] == "vllm" and base["max_model_len"] == 8192 and base["parent"] is None
    ad = cards["t1"].model_dump()
    assert ad["parent"] == BASE_MODEL_NAME and ad["root"] == str(engine_server.adapter_paths["t1"])
    assert ad["object"] == "model" and ad["permission"] == []
    assert httpx.get(engine_server.root_url + "/health").status_code == 200


def test_adapters_change_replies_and_repeat(client, alone):
    p = PROMPTS[0]
    replies = [alone[(m, p)] for m in (BASE_MODEL_NAME, "t1", "t2")]
    assert len(set(replies)) == 3, replies
    assert all(replies)
    for m, want in zip((BASE_MODEL_NAME, "t1", "t2"), replies, strict=True):
        assert ask(client, m, p) == want


def test_alone_equals_mixed_batch(client, alone):
    jobs = [(m, p) for (m, p) in alone] * 2
    with ThreadPoolExecutor(len(jobs)) as ex:
        got = list(ex.map(lambda j: ask(client, *j), jobs))
    for job, text in zip(jobs, got, strict=True):
        assert text == alone[job], job


def test_sixteen_streams_over_four_adapters(client, engine_server, alone):
    jobs = [(engine_server.adapters[i % 4], PROMPTS[i % 2]) for i in range(16)]
    with ThreadPoolExecutor(16) as ex:
        got = list(ex.map(lambda j: stream_text(client, *j), jobs))
    for job, text in zip(jobs, got, strict=True):
        assert text == alone[job], job


def test_lru_eviction_reloads(client, engine_server, alone):
    # --max-cpu-loras 3 with four adapters: cycling through all of them must evict and re-read.
    before = metric(engine_server, "tuneloop:engine_lora_evictions")
    for _ in range(2):
        for name in engine_server.adapters:
            assert ask(client, name, PROMPTS[0]) == alone[(name, PROMPTS[0])]
    assert metric(engine_server, "tuneloop:engine_lora_evictions") > before
    assert metric(engine_server, "tuneloop:engine_loras_held") <= 3


def test_runtime_load_and_unload(client, engine_server, test_adapters):
    body = {"lora_name": "rt", "lora_path": str(test_adapters.paths[EXTRA])}
    r = httpx.post(engine_server.base_url + "/load_lora_adapter", json=body)
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'rt' added successfully."
    assert r.headers["content-type"].startswith("text/plain")
    with pytest.raises(openai.BadRequestError):  # already loaded
        client.post("load_lora_adapter", cast_to=str, body=body)
    reply = ask(client, "rt", PROMPTS[0])
    assert reply and reply != ask(client, BASE_MODEL_NAME, PROMPTS[0])
    assert "rt" in {m.id for m in client.models.list().data}
    swap = {"lora_name": "rt", "lora_path": str(engine_server.adapter_paths["t1"]), "load_inplace": True}
    assert httpx.post(engine_server.base_url + "/load_lora_adapter", json=swap).status_code == 200
    assert ask(client, "rt", PROMPTS[0]) == ask(client, "t1", PROMPTS[0]) != reply
    out = client.post("unload_lora_adapter", cast_to=str, body={"lora_name": "rt"})
    assert out == "Success: LoRA adapter 'rt' removed successfully."
    with pytest.raises(openai.NotFoundError):
        ask(client, "rt", PROMPTS[0])
    with pytest.raises(openai.NotFoundError):
        client.post("unload_lora_adapter", cast_to=str, body={"lora_name": "rt"})


def test_bad_adapters_and_inputs(client, engine_server, test_adapters):
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, "no-such-adapter", "hi")
    assert e.value.code == "model_not_found" and "The model `no-such-adapter` does not exist." in e.value.message
    with pytest.raises(openai.BadRequestError):  # trained for another base
        client.post("load_lora_adapter", cast_to=str,
                    body={"lora_name": "bad", "lora_path": str(test_adapters.paths[OTHER_BASE])})
    with pytest.raises(openai.NotFoundError):  # no adapter_config.json: vLLM's 404 (test_lora_management.py)
        client.post("load_lora_adapter", cast_to=str,
                    body={"lora_name": "bad", "lora_path": str(test_adapters.paths["not_an_adapter"])})
    with pytest.raises(openai.BadRequestError):
        client.post("load_lora_adapter", cast_to=str, body={"lora_name": "bad"})
    assert "bad" not in {m.id for m in client.models.list().data}
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, BASE_MODEL_NAME, "hello " * 9000)
    assert "maximum context length" in e.value.message
    with pytest.raises(openai.BadRequestError):
        ask(client, BASE_MODEL_NAME, "hi", max_tokens=8190)
    with pytest.raises(openai.BadRequestError):
        ask(client, BASE_MODEL_NAME, "hi", max_tokens=-1)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=BASE_MODEL_NAME, messages=[{"role": "user", "content": "x"}],
                                       temperature=3)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=BASE_MODEL_NAME, messages=[])
    r = httpx.post(engine_server.base_url + "/chat/completions", json={"model": "nope", "messages": []})
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_sampling_usage_and_stops(client, engine_server):
    msgs = [{"role": "user", "content": PROMPTS[2]}]
    kw = dict(model=BASE_MODEL_NAME, messages=msgs, temperature=1.2, max_tokens=16, seed=7, n=2,
              extra_body={"top_k": 50})
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len(a.choices) == 2 and a.choices[0].message.content != a.choices[1].message.content
    c = client.chat.completions.create(**{**kw, "seed": 8})
    assert [x.message.content for x in c.choices] != [x.message.content for x in a.choices]

    tok = AutoTokenizer.from_pretrained(cache_dir(engine_server.home))
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    r = client.chat.completions.create(model=BASE_MODEL_NAME, messages=msgs, temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 5
    assert r.usage.total_tokens == len(ids) + 5
    cached = r.usage.prompt_tokens_details.cached_tokens  # the template's system block is reused
    assert 16 <= cached < len(ids) and cached % 16 == 0
    assert len(tok.encode(r.choices[0].message.content)) <= 5

    full = ask(client, BASE_MODEL_NAME, PROMPTS[0], max_tokens=20)
    word = full.split()[2]
    cut = ask(client, BASE_MODEL_NAME, PROMPTS[0], max_tokens=20, stop=[word, "zzzz"])
    assert cut == full[: full.index(word)]
    r = client.chat.completions.create(model=BASE_MODEL_NAME, messages=[{"role": "user", "content": PROMPTS[0]}],
                                       temperature=0, max_tokens=20, stop=word)
    assert r.choices[0].finish_reason == "stop"
    # streamed with usage: a last chunk without choices carries it
    chunks = list(client.chat.completions.create(
        model="t1", messages=msgs, temperature=0, max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    assert all(ch.usage is None for ch in chunks[:-1]) and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].usage.prompt_tokens == len(ids)
    assert len({ch.id for ch in chunks}) == 1
    assert metric(engine_server, "vllm:generation_tokens_total") > 0


def test_disconnect_frees_slot(engine_server):
    aborted = metric(engine_server, "tuneloop:engine_aborted_requests_total")
    body = {"model": "t3", "messages": [{"role": "user", "content": "Tell me a long story."}], "stream": True,
            "max_tokens": 4000, "ignore_eos": True, "temperature": 0}
    with httpx.Client(timeout=60) as h, h.stream("POST", engine_server.base_url + "/chat/completions",
                                                  json=body) as r:
        lines = r.iter_lines()
        seen = 0
        for line in lines:
            if line.startswith("data: "):
                seen += 1
            if seen >= 4:
                break
        assert metric(engine_server, "vllm:num_requests_running") == 1
    deadline = time.monotonic() + 10
    while metric(engine_server, "vllm:num_requests_running") != 0:
        assert time.monotonic() < deadline, "slot not freed after disconnect"
        time.sleep(0.1)
    assert metric(engine_server, "tuneloop:engine_aborted_requests_total") == aborted + 1
