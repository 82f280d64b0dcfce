"""vLLM's small routes on the real engine (``adapters/engine/routes_misc.py``): /version, /tokenize,
/detokenize, /v1/models/{id}, /ping, /invocations, and which of them the API key guards."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import httpx
import openai
import pytest

from adapters.engine.model import BASE_MODEL_NAME
from tests.fixtures import engine as fx

MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}]
TEXTS = ["Hello world, this is a round trip: 12345 ünïcødé ✓", "  leading spaces\nand a newline\t tab", "x"]


@pytest.fixture(scope="module")
def hf_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from adapters.engine.model import ensure_cached

    return AutoTokenizer.from_pretrained(ensure_cached(fx.test_home()))


def post(url: str, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=120, **kw)


def test_version_and_ping(engine_server):
    r = httpx.get(engine_server.root_url + "/version")
    assert r.status_code == 200 and r.json() == {"version": importlib.metadata.version("tuneloop")}
    assert httpx.get(engine_server.root_url + "/ping").status_code == 200
    assert httpx.post(engine_server.root_url + "/ping").status_code == 200


def test_tokenize_a_prompt_as_the_hf_tokenizer(engine_server, hf_tokenizer):
    root = engine_server.root_url
    max_len = next(m["max_model_len"] for m in httpx.get(root + "/v1/models").json()["data"])
    for text in TEXTS:
        for special in (True, False):
            r = post(root, "/tokenize", {"prompt": text, "add_special_tokens": special, "return_token_strs": True})
            assert r.status_code == 200, r.text
            ids = hf_tokenizer(text, add_special_tokens=special)["input_ids"]
            assert r.json() == {"count": len(ids), "max_model_len": max_len, "tokens": ids,
                                "token_strs": hf_tokenizer.convert_ids_to_tokens(ids)}
    out = post(root, "/tokenize", {"model": BASE_MODEL_NAME, "prompt": TEXTS[0]}).json()
    assert out["token_strs"] is None and out["tokens"] == hf_tokenizer(TEXTS[0])["input_ids"]


def test_tokenize_messages_as_the_chat_template(engine_server, hf_tokenizer):
    root = engine_server.root_url
    for agp in (True, False):
        r = post(root, "/tokenize", {"messages": MSGS, "add_generation_prompt": agp})
        assert r.status_code == 200, r.text
        ids = list(hf_tokenizer.apply_chat_template(MSGS, add_generation_prompt=agp, tokenize=True, return_dict=False))
        assert r.json()["tokens"] == ids and r.json()["count"] == len(ids)
    prefill = [*MSGS, {"role": "assistant", "content": "Red, green"}]
    r = post(root, "/tokenize", {"messages": prefill, "add_generation_prompt": False,
                                 "continue_final_message": True, "model": "t1"})
    ids = list(hf_tokenizer.apply_chat_template(prefill, continue_final_message=True, tokenize=True, return_dict=False))
    assert r.status_code == 200 and r.json()["tokens"] == ids
    assert hf_tokenizer.decode(ids).endswith("Red, green")
    # add_special_tokens: the rendered text, tokenized with the tokenizer's own special tokens (as vLLM)
    text = hf_tokenizer.apply_chat_template(MSGS, add_generation_prompt=True, tokenize=False)
    r = post(root, "/tokenize", {"messages": MSGS, "add_special_tokens": True})
    assert r.status_code == 200 and r.json()["tokens"] == hf_tokenizer(text, add_special_tokens=True)["input_ids"]
    # the same count as the prompt a chat completion is charged for
    chat = post(root, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 1}).json()
    assert chat["usage"]["prompt_tokens"] == post(root, "/tokenize", {"messages": MSGS}).json()["count"]
    for body, param in (({"messages": MSGS, "chat_template_kwargs": {"tokenize": True}}, "chat_template_kwargs"),
                        ({"messages": MSGS, "add_generation_prompt": True, "continue_final_message": True},
                         "continue_final_message"),
                        ({"messages": [{"content": "no role"}]}, "messages"),
                        ({"prompt": 12}, "prompt"), ({"neither": 1}, None)):
        r = post(root, "/tokenize", body)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert param is None or (r.json()["error"]["param"] or "").startswith(param), (body, r.text)


def test_detokenize_round_trip_and_vocabulary(engine_server, hf_tokenizer):
    root = engine_server.root_url
    for text in TEXTS:
        ids = post(root, "/tokenize", {"prompt": text}).json()["tokens"]
        r = post(root, "/detokenize", {"tokens": ids, "model": "t2"})
        assert r.status_code == 200 and r.json() == {"prompt": hf_tokenizer.decode(ids)}
        assert r.json()["prompt"] == text
    chat_ids = post(root, "/tokenize", {"messages": MSGS}).json()["tokens"]
    assert post(root, "/detokenize", {"tokens": chat_ids}).json()["prompt"] == hf_tokenizer.decode(chat_ids)
    for bad in ([len(hf_tokenizer)], [1, -1], [10**12]):
        r = post(root, "/detokenize", {"tokens": bad})
        assert r.status_code == 400 and "out of vocabulary" in r.json()["error"]["message"], r.text
    assert post(root, "/detokenize", {"tokens": "abc"}).status_code == 400


def test_unknown_models_are_404(engine_server):
    root = engine_server.root_url
    for path, body in (("/tokenize", {"prompt": "hi"}), ("/tokenize", {"messages": MSGS}),
                       ("/detokenize", {"tokens": [1, 2]})):
        r = post(root, path, {**body, "model": "no-such-model"})
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "model_not_found" and "`no-such-model`" in r.json()["error"]["message"]


def test_retrieve_model_cards(engine_server):
    root = engine_server.root_url
    listed = {m["id"]: m for m in httpx.get(root + "/v1/models").json()["data"]}
    for name in (BASE_MODEL_NAME, "t1", "t4"):
        r = httpx.get(f"{root}/v1/models/{name}")
        assert r.status_code == 200 and r.json() == listed[name]
    client = openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0)
    card = client.models.retrieve("t3")
    assert card.id == "t3" and card.object == "model" and card.owned_by == "vllm"
    assert (card.model_extra or {})["parent"] == BASE_MODEL_NAME
    for missing in ("nope", "org/nope"):
        r = httpx.get(f"{root}/v1/models/{missing}")
        assert r.status_code == 404, r.text
        assert r.json() == {"error": {"message": f"The model `{missing}` does not exist.",
                                      "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def _has_completions(root: str) -> bool:
    return post(root, "/v1/completions", {"prompt": "x", "max_tokens": 1}).status_code != 404


def test_invocations_dispatch_by_shape(engine_server):
    root = engine_server.root_url
    body = {"messages": MSGS, "max_tokens": 8, "temperature": 0, "model": "t1"}
    direct = post(root, "/v1/chat/completions", body).json()
    via = post(root, "/invocations", body)
    assert via.status_code == 200, via.text
    assert via.json()["object"] == "chat.completion"
    assert via.json()["choices"][0]["message"] == direct["choices"][0]["message"]
    streamed = post(root, "/invocations", {**body, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert post(root, "/invocations", {**body, "model": "missing"}).status_code == 404
    assert post(root, "/invocations", {**body, "temperature": 9}).status_code == 400
    prompt = post(root, "/invocations", {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0})
    if _has_completions(root):
        assert prompt.status_code == 200 and prompt.json()["object"] == "text_completion", prompt.text
    else:
        assert prompt.status_code == 400 and "unsupported" in prompt.json()["error"]["message"], prompt.text
    neither = post(root, "/invocations", {"input": "hello"})
    assert neither.status_code == 400 and "Cannot find suitable handler" in neither.json()["error"]["message"]
    r = httpx.post(root + "/invocations", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_the_api_key_guards_all_but_vllms_public_routes(resolver_engine):
    url, auth = resolver_engine.url, resolver_engine.headers
    guarded = [("POST", "/tokenize", {"prompt": "hi"}), ("POST", "/detokenize", {"tokens": [1]}),
               ("POST", "/invocations", {"messages": MSGS, "max_tokens": 1}),
               ("GET", f"/v1/models/{BASE_MODEL_NAME}", None), ("GET", "/v1/models", None),
               ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/nope"})]
    for method, path, body in guarded:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.request(method, url + path, json=body, headers=headers, timeout=60)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, r.text)
        r = httpx.request(method, url + path, json=body, headers=auth, timeout=60)
        assert r.status_code not in (401, 403), (path, r.text)
    for method, path in (("GET", "/version"), ("GET", "/ping"), ("POST", "/ping"), ("GET", "/health"),
                         ("GET", "/metrics")):
        assert httpx.request(method, url + path).status_code == 200, path
    assert httpx.get(url + "/healthz").status_code == 401  # a public path's prefix is not public
