"""vLLM's chat fields that used to be accepted and ignored: each now does what vLLM does, or is a 400.

Against the session engine (``engine_server``, started with ``--enable-prompt-tokens-details``), plain HTTP
so that the request bodies and headers are exactly vLLM's.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from adapters.engine.model import BASE_MODEL_NAME

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "What is the capital of France?"}]


def post(engine_server, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(engine_server.base_url + "/chat/completions", timeout=120, **kw,
                      json={"model": BASE_MODEL_NAME, "temperature": 0, "max_tokens": 6, **body})


def streamed(engine_server, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", engine_server.base_url + "/chat/completions", timeout=120,
                      json={"model": BASE_MODEL_NAME, "temperature": 0, "max_tokens": 6, "stream": True,
                            **body}) as r:
        assert r.status_code == 200
        return [orjson.loads(line[6:]) for line in r.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"]


def test_stream_options_need_stream_and_bodies_must_be_json(engine_server):
    r = post(engine_server, {"messages": HI, "stream_options": {"include_usage": True}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"
    r = httpx.post(engine_server.base_url + "/chat/completions", timeout=60, headers={"content-type": "text/plain"},
                   content=orjson.dumps({"model": BASE_MODEL_NAME, "messages": HI}))
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]


def test_truncate_prompt_tokens_keeps_the_last_tokens(engine_server):
    long = [{"role": "user", "content": "Tell me about Paris. " * 40}]
    full = post(engine_server, {"messages": long}).json()["usage"]["prompt_tokens"]
    cut = post(engine_server, {"messages": long, "truncate_prompt_tokens": 20})
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 20 < full
    same = post(engine_server, {"messages": long, "truncate_prompt_tokens": -1})  # -1: the model's length
    assert same.json()["usage"]["prompt_tokens"] == full
    over = post(engine_server, {"messages": HI, "truncate_prompt_tokens": 10**9})
    assert over.status_code == 400 and over.json()["error"]["param"] == "truncate_prompt_tokens"
    bad = post(engine_server, {"messages": HI, "truncate_prompt_tokens": -2})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "truncate_prompt_tokens"


def test_return_token_ids_plain_and_streamed_agree(engine_server):
    body = {"messages": HI, "return_token_ids": True}
    plain = post(engine_server, body).json()
    ids = plain["choices"][0]["token_ids"]
    assert len(ids) == plain["usage"]["completion_tokens"]
    assert len(plain["prompt_token_ids"]) == plain["usage"]["prompt_tokens"]
    chunks = streamed(engine_server, body)
    assert chunks[0]["prompt_token_ids"] == plain["prompt_token_ids"]
    assert [t for c in chunks for ch in c["choices"] for t in ch["token_ids"]] == ids
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert "prompt_token_ids" not in post(engine_server, {"messages": HI}).json()  # only when asked


def test_echo_prepends_the_continued_assistant_message(engine_server):
    start = "The capital of France is"
    msgs = [*HI, {"role": "assistant", "content": start}]
    body = {"messages": msgs, "continue_final_message": True, "add_generation_prompt": False}
    bare = post(engine_server, body).json()["choices"][0]["message"]["content"]
    echoed = post(engine_server, {**body, "echo": True}).json()["choices"][0]["message"]["content"]
    assert bare and echoed == start + bare  # vLLM: the last message, then what continues it
    chunks = streamed(engine_server, {**body, "echo": True})
    assert "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]) == echoed
    plain = post(engine_server, {"messages": HI, "echo": True}).json()  # last message the user's: nothing added
    assert not plain["choices"][0]["message"]["content"].startswith(HI[0]["content"])


def test_prompt_tokens_details_with_the_flag(engine_server):
    usage = post(engine_server, {"messages": HI}).json()["usage"]
    assert set(usage["prompt_tokens_details"]) == {"cached_tokens"}
