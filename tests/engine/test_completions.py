"""vLLM's legacy Completions API (``POST /v1/completions``) on the real engine: the official ``openai`` SDK
for what works (checked against transformers' own greedy decoding and log-softmax), plain HTTP for the 400s."""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import openai
import orjson
import pytest

from adapters.engine.model import BASE_MODEL_NAME
from tests.fixtures.engine import test_home as engine_home

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
OTHER = "Once upon a time, a little"


@pytest.fixture(scope="module")
def client(engine_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def hf() -> tuple[Any, Any]:
    from adapters.engine.model import load_base_model

    return load_base_model(engine_home())


def greedy(client: openai.OpenAI, prompt: Any, max_tokens: int = 8, **kw: Any) -> Any:
    extra = {"ignore_eos": True, **kw.pop("extra_body", {})}
    return client.completions.create(model=BASE_MODEL_NAME, prompt=prompt, temperature=0, max_tokens=max_tokens,
                                     extra_body=extra, **kw)


def post(engine_server, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(engine_server.base_url + "/completions", timeout=120, **kw,
                      json={"model": BASE_MODEL_NAME, "temperature": 0, "max_tokens": 4, **body})


def test_greedy_completion_is_transformers_greedy_generate(client, hf) -> None:
    import torch

    model, tok = hf
    ids = tok.encode(PROMPT)
    want = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=8,
                          attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0, len(ids):].tolist()
    assert len(want) == 8 and tok.eos_token_id not in want
    r = greedy(client, PROMPT, extra_body={"return_token_ids": True, "ignore_eos": False})
    c = r.choices[0]
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == BASE_MODEL_NAME
    assert c.model_extra["token_ids"] == want and c.model_extra["prompt_token_ids"] == ids
    assert c.text == tok.decode(want, skip_special_tokens=True) and c.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (len(ids), 8, len(ids) + 8)
    assert client.completions.create(model=BASE_MODEL_NAME, prompt=PROMPT, temperature=0,
                                     extra_body={"ignore_eos": True}).usage.completion_tokens == 16


def test_several_prompts_and_token_ids_give_one_choice_per_prompt_per_n(client, hf) -> None:
    _, tok = hf
    alone = [greedy(client, p).choices[0].text for p in (PROMPT, OTHER)]
    r = greedy(client, [PROMPT, OTHER], n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [alone[0], alone[0], alone[1], alone[1]]
    assert r.usage.prompt_tokens == len(tok.encode(PROMPT)) + len(tok.encode(OTHER))
    assert r.usage.completion_tokens == 4 * 8
    assert greedy(client, tok.encode(PROMPT)).choices[0].text == alone[0]  # one prompt of token ids
    both = greedy(client, [tok.encode(PROMPT), tok.encode(OTHER)])
    assert [c.text for c in both.choices] == alone


def test_streamed_with_usage(client) -> None:
    whole = greedy(client, [PROMPT, OTHER])
    chunks = list(greedy(client, [PROMPT, OTHER], stream=True, stream_options={"include_usage": True}))
    assert {ch.object for ch in chunks} == {"text_completion"} and len({ch.id for ch in chunks}) == 1
    assert all(ch.usage is None for ch in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    for i in (0, 1):
        parts = [c for ch in chunks for c in ch.choices if c.index == i]
        assert "".join(c.text for c in parts) == whole.choices[i].text
        assert parts[-1].finish_reason == "length" and all(c.finish_reason is None for c in parts[:-1])
    plain = list(greedy(client, PROMPT, stream=True))
    assert all(ch.usage is None for ch in plain) and plain[-1].choices


def test_echo_with_logprobs_gives_the_prompt_and_its_logprobs(client, hf) -> None:
    import torch

    model, tok = hf
    ids = tok.encode(PROMPT)
    r = greedy(client, PROMPT, max_tokens=3, echo=True, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    assert c.text.startswith(PROMPT) and len(c.text) > len(PROMPT)
    assert len(lp.tokens) == len(ids) + 3 and "".join(lp.tokens) == c.text
    assert lp.tokens[0] == tok.decode([ids[0]]) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:k]) for k in range(len(lp.tokens))]
    with torch.inference_mode():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    for k in range(1, len(ids)):  # token k given the tokens before it
        assert math.isclose(lp.token_logprobs[k], float(ref[k - 1, ids[k]]), abs_tol=2e-3)
        best = torch.topk(ref[k - 1], 2).indices.tolist()
        assert set(lp.top_logprobs[k]) == {tok.decode([t]) for t in [ids[k], *best]}
    assert all(len(top) <= 3 for top in lp.top_logprobs[1:])  # the token itself and the 2 most likely
    prompt_lps = c.model_extra["prompt_logprobs"]  # vLLM's extension: ids, ranks and decoded tokens
    assert prompt_lps[0] is None and len(prompt_lps) == len(ids)
    assert prompt_lps[1][str(ids[1])]["decoded_token"] == tok.decode([ids[1]])
    rank, at = prompt_lps[1][str(ids[1])]["rank"], float(ref[0, ids[1]])
    assert int((ref[0] > at + 1e-3).sum()) + 1 <= rank <= int((ref[0] > at - 1e-3).sum()) + 1
    only = greedy(client, PROMPT, max_tokens=0, echo=True, logprobs=1).choices[0]  # the prompt alone
    assert only.text == PROMPT and len(only.logprobs.tokens) == len(ids)
    streamed = list(greedy(client, PROMPT, max_tokens=3, echo=True, logprobs=2, stream=True))
    assert "".join(c.text for ch in streamed for c in ch.choices) == c.text
    assert [t for ch in streamed for c in ch.choices for t in c.logprobs.tokens] == lp.tokens
    assert [o for ch in streamed for c in ch.choices for o in c.logprobs.text_offset] == lp.text_offset


def test_an_adapter_model_and_an_unknown_one(client, engine_server) -> None:
    base = greedy(client, PROMPT, max_tokens=12).choices[0].text
    r = client.completions.create(model="t1", prompt=PROMPT, temperature=0, max_tokens=12,
                                  extra_body={"ignore_eos": True})
    assert r.model == "t1" and r.choices[0].text and r.choices[0].text != base
    assert client.completions.create(model="t1", prompt=PROMPT, temperature=0, max_tokens=12,
                                     extra_body={"ignore_eos": True}).choices[0].text == r.choices[0].text
    with pytest.raises(openai.NotFoundError) as exc:
        client.completions.create(model="nope", prompt=PROMPT)
    assert exc.value.body["code"] == "model_not_found"


def test_stops_special_tokens_and_truncation(engine_server, hf) -> None:
    _, tok = hf
    full = post(engine_server, {"prompt": PROMPT, "max_tokens": 12, "ignore_eos": True,
                                "return_token_ids": True}).json()["choices"][0]
    word = full["text"].split()[1]
    cut = post(engine_server, {"prompt": PROMPT, "max_tokens": 12, "stop": [word]}).json()["choices"][0]
    assert (cut["text"], cut["finish_reason"], cut["stop_reason"]) == (full["text"][: full["text"].index(word)],
                                                                       "stop", word)
    first = full["token_ids"][0]
    by_id = post(engine_server, {"prompt": PROMPT, "max_tokens": 12, "stop_token_ids": [first]}).json()["choices"][0]
    assert (by_id["text"], by_id["stop_reason"]) == ("", first)
    eos = {"prompt": PROMPT, "max_tokens": 2, "ignore_eos": True, "logit_bias": {str(tok.eos_token_id): 100}}
    assert post(engine_server, eos).json()["choices"][0]["text"] == ""
    kept = post(engine_server, {**eos, "skip_special_tokens": False}).json()["choices"][0]["text"]
    assert kept == tok.eos_token * 2
    ids = tok.encode(PROMPT)
    last = post(engine_server, {"prompt": PROMPT, "truncate_prompt_tokens": 2, "echo": True}).json()
    assert last["usage"]["prompt_tokens"] == 2 and last["choices"][0]["text"].startswith(tok.decode(ids[-2:]))
    head = post(engine_server, {"prompt": PROMPT, "truncate_prompt_tokens": 2, "truncation_side": "right",
                                "echo": True}).json()
    assert head["choices"][0]["text"].startswith(tok.decode(ids[:2]))


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": PROMPT, "suffix": " and"}, "suffix"),
    ({"prompt": PROMPT, "logprobs": 21}, "logprobs"),
    ({"prompt": PROMPT, "logprobs": -1}, "logprobs"),
    ({"prompt": PROMPT, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": [1, 49152]}, "prompt"),
    ({"prompt": [[5], [-1]]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [PROMPT, ""]}, "prompt"),
    ({"prompt": "word " * 9000}, "prompt"),
    ({"prompt": PROMPT, "max_tokens": 0}, "max_tokens"),
    ({"prompt": PROMPT, "best_of": 2}, "best_of"),
    ({"prompt": PROMPT, "n": 2, "best_of": 1}, "best_of"),
    ({"prompt": PROMPT, "prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
    ({"prompt": PROMPT, "use_beam_search": True}, "use_beam_search"),
    ({"prompt": PROMPT, "temperature": 3}, "temperature"),
])
def test_what_cannot_be_done_is_a_400_naming_the_field(engine_server, body, param) -> None:
    r = post(engine_server, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"]


def test_bodies_must_be_json_and_a_disconnect_aborts(engine_server) -> None:
    r = httpx.post(engine_server.base_url + "/completions", timeout=60, headers={"content-type": "text/plain"},
                   content=orjson.dumps({"model": BASE_MODEL_NAME, "prompt": PROMPT}))
    assert r.status_code == 415
    body = {"model": BASE_MODEL_NAME, "prompt": [PROMPT, OTHER], "stream": True, "max_tokens": 4000,
            "ignore_eos": True, "temperature": 0}
    with httpx.Client(timeout=60) as h, h.stream("POST", engine_server.base_url + "/completions", json=body) as s:
        seen = 0
        for line in s.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 4:
                break
    deadline = time.monotonic() + 10
    while _running(engine_server) != 0:
        assert time.monotonic() < deadline, "the prompts' requests were not aborted after the disconnect"
        time.sleep(0.1)


def _running(engine_server) -> float:
    text = httpx.get(engine_server.root_url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running"))
