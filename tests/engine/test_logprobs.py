"""logprobs, top_logprobs and logit_bias through the real engine and the openai SDK, checked against
transformers' own log-softmax; and what the engine cannot honour answered with a 400 that names the
field (never a reply that ignores it)."""

from __future__ import annotations

import math

import openai
import pytest

from tests.fixtures.engine import test_home as engine_home

MSG = [{"role": "user", "content": "Name three colours."}]
MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(engine_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0)


def _greedy(client: openai.OpenAI, **kw):
    return client.chat.completions.create(model=MODEL, messages=MSG, temperature=0, max_tokens=6,
                                          extra_body={"ignore_eos": True}, **kw)


def test_logprobs_are_transformers_log_softmax_of_each_chosen_token(client) -> None:
    import torch

    from adapters.engine.model import load_base_model

    reply = _greedy(client, logprobs=True, top_logprobs=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens == 6
    model, tok = load_base_model(engine_home())
    prompt = tok.apply_chat_template(MSG, add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = torch.tensor([prompt])
    chosen: list[int] = []
    with torch.inference_mode():
        for entry in entries:
            logits = model(torch.cat([ids, torch.tensor([chosen], dtype=torch.long)], dim=1)).logits[0, -1]
            lp = torch.log_softmax(logits.float(), dim=-1)
            top = torch.topk(lp, 3)
            best = int(top.indices[0])  # greedy: the chosen token is the most likely one
            assert entry.token == tok.decode([best]) and entry.bytes == list(entry.token.encode())
            assert math.isclose(entry.logprob, float(lp[best]), abs_tol=2e-3), (entry.logprob, float(lp[best]))
            assert [t.token for t in entry.top_logprobs] == [tok.decode([int(i)]) for i in top.indices]
            assert all(math.isclose(t.logprob, float(v), abs_tol=2e-3)
                       for t, v in zip(entry.top_logprobs, top.values, strict=True))
            chosen.append(best)
    assert "".join(e.token for e in entries) == reply.choices[0].message.content


def test_streamed_logprobs_match_the_reply(client) -> None:
    whole = _greedy(client, logprobs=True, top_logprobs=2).choices[0].logprobs.content
    parts = []
    for chunk in _greedy(client, logprobs=True, top_logprobs=2, stream=True):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            parts += chunk.choices[0].logprobs.content
    assert [e.token for e in parts] == [e.token for e in whole]
    assert all(math.isclose(a.logprob, b.logprob, abs_tol=1e-4) for a, b in zip(parts, whole, strict=True))
    assert all(len(e.top_logprobs) == 2 for e in parts)


def test_without_logprobs_there_are_none(client) -> None:
    assert _greedy(client).choices[0].logprobs is None
    only_chosen = _greedy(client, logprobs=True).choices[0].logprobs.content
    assert only_chosen and all(e.top_logprobs == [] for e in only_chosen)


def test_logit_bias_steers_and_forbids(client) -> None:
    from adapters.engine.model import load_base_model

    _, tok = load_base_model(engine_home())
    plain = _greedy(client, logprobs=True).choices[0].logprobs.content
    first = tok.convert_tokens_to_ids(tok.tokenize(plain[0].token))[0]
    banned = _greedy(client, logprobs=True, logit_bias={str(first): -100}).choices[0].logprobs.content
    assert banned[0].token != plain[0].token  # the greedy first token is forbidden
    forced = tok.encode(" blue")[0]
    steered = _greedy(client, logit_bias={str(forced): 100}).choices[0].message.content
    assert steered == tok.decode([forced] * 6)


@pytest.mark.parametrize(("kw", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
     "tool_choice"),  # "auto" without --enable-auto-tool-choice, as in vLLM
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
      "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "nope"}], "tool_choice": "required"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}], "tool_choice": "required"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)],
      "tool_choice": "required"}, "tools"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     "response_format"),  # a schema that does not compile
    ({"extra_body": {"guided_regex": "[a-z]+"}}, "guided_regex"),
    ({"extra_body": {"use_beam_search": True}}, "use_beam_search"),
    ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logit_bias": {"49152": 5}}, "logit_bias"),  # past SmolLM2's vocabulary
    ({"logit_bias": {"17": 101}}, "logit_bias"),
])
def test_what_the_engine_cannot_honour_is_a_400_naming_it(client, kw, param) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2, **kw)
    assert err.value.status_code == 400 and err.value.body["param"] == param, err.value.body


def test_tools_with_tool_choice_none_are_accepted(client) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=2, tool_choice="none",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert reply.choices[0].message.tool_calls in (None, [])
