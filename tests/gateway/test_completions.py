"""POST /v1/completions (OpenAI's legacy API) through a real gateway, driven by the real openai SDK.

The gateway runs with keys required (project ``text``) against the fake OpenAI upstream, which
serves ``/v1/completions`` (tests/fakes/openai_completions.py) behind both an ``openai`` target (the
SDK's ``completions.create``) and a ``vllm`` one (plain HTTP). Each interaction is read back from
the gateway's own database: ``object`` ``text_completion``, the prompt, the text, the usage.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.datasets.build import BuildOptions, build
from gateway.log.export import ExportFilters
from gateway.store import db
from gateway.store.interactions import LogStore
from tests.fixtures.gateway import GatewayProcess, fake_config, received
from tests.spec import validate

PROMPT = "Say this is a test"
EXTRA = {
    # a failing vllm target (HTTP 500) first, then the OpenAI one
    "text-fallback": {"routes": [{"target": "faulty", "model": "fake-error-500"}], "retries": 0,
                      "fallbacks": ["ft-bot"]},
    "text-mixed": {"routes": [{"target": "fake-openai", "model": "davinci-002"}], "fallbacks": ["lora-bot"]},
}


@pytest.fixture(scope="module")
def gw(fake_upstream, tmp_path_factory):
    gw = GatewayProcess(fake_config(fake_upstream, **EXTRA), tmp_path_factory.mktemp("completions"),
                        env={"TUNELOOP_AUTH": "required"})
    gw.admin = gw.make_key("--project", "ops", "--admin")  # type: ignore[attr-defined]
    gw.key = new_key(gw, "text")  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def new_key(gw: GatewayProcess, project: str, **limits: float) -> str:
    made = httpx.post(f"{gw.base_url}/admin/keys", headers={"authorization": f"Bearer {gw.admin}"},
                      json={"project": project, "limits": limits})
    assert made.status_code == 200, made.text
    return made.json()["key"]


def client(gw: GatewayProcess, key: str | None = None) -> openai.OpenAI:
    return gw.client(api_key=key or gw.key)


def record(gw: GatewayProcess, completion_id: str, timeout: float = 15) -> dict:
    """The interaction's row, once the log has written it."""
    engine = db.create_engine(f"sqlite:///{gw.home}/tuneloop.db")
    deadline = time.time() + timeout
    try:
        while (row := LogStore(engine).record(completion_id)) is None and time.time() < deadline:
            time.sleep(0.05)
    finally:
        engine.dispose()
    assert row is not None, f"{completion_id} is not in the log"
    return row


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{gw.root}/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.mark.parametrize("model", ["ft-bot", "lora-bot"])
def test_plain_completion_validates_and_is_logged(gw, model):
    raw = client(gw).completions.with_raw_response.create(model=model, prompt=PROMPT, max_tokens=7, temperature=0)
    validate("CreateCompletionResponse", json.loads(raw.text))
    made = raw.parse()
    assert made.object == "text_completion" and made.choices[0].text == f"echo: {PROMPT}"
    assert made.id.startswith("cmpl-") and not made.id.startswith("cmpl-up") and raw.headers["x-request-id"] == made.id
    row = record(gw, made.id)
    assert (row["object"], row["kind"], row["status"], row["project"]) == ("text_completion", "primary", 200, "text")
    assert row["request"]["prompt"] == PROMPT and row["response"]["choices"][0]["text"] == f"echo: {PROMPT}"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        made.usage.prompt_tokens, made.usage.completion_tokens, made.usage.total_tokens)
    assert row["finish_reason"] == "stop" and row["latency_s"] > 0 and row["stream"] is False
    if model == "ft-bot":  # priced: the target's table
        assert row["cost_usd"] == pytest.approx(float(raw.headers["x-tuneloop-cost-usd"])) and row["cost_usd"] > 0


@pytest.mark.parametrize("model", ["ft-bot", "lora-bot"])
def test_stream_with_usage_is_relayed_and_logged_once_assembled(gw, model):
    prompt = "one two three four five six seven"
    chunks = list(client(gw).completions.create(model=model, prompt=prompt, stream=True,
                                                stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-")
    for c in chunks:  # the spec shares the shape; a stream's finish_reason and usage are null until the end
        assert c.object == "text_completion"
        if not c.choices or c.choices[0].finish_reason:
            validate("CreateCompletionResponse", {k: v for k, v in c.model_dump(exclude_unset=True).items()
                                                  if v is not None})
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].choices == []
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == f"echo: {prompt}"
    row = record(gw, chunks[0].id)
    assert row["object"] == "text_completion" and row["stream"] is True and row["ttft_s"] is not None
    assert row["response"]["choices"] == [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]
    assert row["completion_tokens"] == chunks[-1].usage.completion_tokens and row["finish_reason"] == "stop"


def test_stream_without_usage_hides_the_usage_we_asked_for(gw, fake_upstream, upstream_requests):
    with httpx.stream("POST", f"{gw.base_url}/completions", headers={"authorization": f"Bearer {gw.key}"},
                      json={"model": "lora-bot", "prompt": PROMPT, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in e and e["choices"] for e in events)
    (req,) = received(fake_upstream)
    assert req["path"] == "/v1/completions" and req["body"]["stream_options"] == {"include_usage": True}
    assert record(gw, events[0]["id"])["total_tokens"] > 0


def test_fallback_from_a_failing_target_to_a_good_one(gw):
    answered = {"model": "ft-bot", "target": "fake-openai", "api": "completions", "status": "200"}  # the fallback alias
    before = metric(gw, "tuneloop_requests_total", **answered)
    raw = client(gw).completions.with_raw_response.create(model="text-fallback", prompt=PROMPT)
    assert raw.parse().choices[0].text == f"echo: {PROMPT}" and raw.headers["x-tuneloop-target"] == "fake-openai"
    row = record(gw, raw.parse().id)
    assert (row["target"], row["attempts"], row["requested_model"]) == ("fake-openai", 2, "text-fallback")
    assert metric(gw, "tuneloop_requests_total", **answered) == before + 1
    assert metric(gw, "tuneloop_fallbacks_total", model="text-fallback", from_target="faulty") >= 1


@pytest.mark.parametrize("body,param", [
    ({"temperature": 3}, "temperature"),
    ({"logprobs": -1}, "logprobs"),
    ({"best_of": 1, "n": 2}, "best_of"),
    ({"best_of": 2, "stream": True}, "best_of"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"echo": "yes"}, "echo"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "ft-bot", "logprobs": 6}, "logprobs"),  # above OpenAI's 5, and the alias has only OpenAI
])
def test_bad_fields_are_a_400_in_openai_envelope(gw, fake_upstream, upstream_requests, body, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).completions.create(**{"model": "lora-bot", "prompt": PROMPT, **body})
    assert caught.value.body["param"] == param and caught.value.body["type"] == "invalid_request_error"
    assert set(caught.value.response.json()["error"]) == {"message", "type", "param", "code"}
    assert received(fake_upstream) == []  # refused before any upstream was called


def test_the_targets_own_400_comes_back_in_openai_envelope(gw):
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).completions.create(model="err400", prompt=PROMPT)
    assert "scripted failure 400" in caught.value.body["message"] and caught.value.request_id.startswith("cmpl-")


def test_a_failure_mid_stream_is_told_in_band_and_logged(gw):
    prompt = "one two three four five six seven eight"
    got, stream = [], client(gw).completions.create(model="midstream", prompt=prompt, stream=True)
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got.append(chunk)
    row = record(gw, got[0].id)
    assert (row["status"], row["object"], row["completion_tokens"]) == (502, "text_completion", len(got))
    assert "scripted mid-stream failure" in row["error"]["message"]


def test_logprobs_above_openai_max_keeps_only_vllm_routes(gw, fake_upstream, upstream_requests):
    raw = client(gw).completions.with_raw_response.create(model="text-mixed", prompt=PROMPT, logprobs=10)
    assert raw.headers["x-tuneloop-target"] == "fake-vllm"
    assert raw.parse().choices[0].logprobs.tokens == ["echo:", *PROMPT.split()]
    assert [r["body"]["logprobs"] for r in received(fake_upstream)] == [10]
    assert client(gw).completions.with_raw_response.create(
        model="text-mixed", prompt=PROMPT, logprobs=5).headers["x-tuneloop-target"] == "fake-openai"


FIELDS = dict(suffix=" the end.", echo=True, best_of=3, n=2, logit_bias={"50256": -100}, stop=["\n"], seed=7,
              max_tokens=16, temperature=0.5, top_p=0.9, presence_penalty=0.1, frequency_penalty=0.2, user="u-9")


def test_every_field_reaches_vllm_untouched_and_openai_without_vllm_extras(gw, fake_upstream, upstream_requests):
    client(gw).completions.create(model="lora-bot", prompt=PROMPT, **FIELDS, extra_body={"top_k": 5, "x-own": 1})
    client(gw).completions.create(model="ft-bot", prompt=PROMPT, **FIELDS, extra_body={"top_k": 5, "x-own": 1})
    to_vllm, to_openai = (r["body"] for r in received(fake_upstream))
    assert to_vllm == {**FIELDS, "prompt": PROMPT, "model": "support-v3", "top_k": 5, "x-own": 1}
    assert to_openai == {**FIELDS, "prompt": PROMPT, "model": "ft:gpt-4o-mini-2024-07-18:acme::abc123"}


def test_batched_and_token_prompts(gw):
    made = client(gw).completions.create(model="lora-bot", prompt=["a b", "c d"], n=2)
    assert [(c.index, c.text) for c in made.choices] == [(0, "echo: a b"), (1, "echo: a b"), (2, "echo: c d"),
                                                         (3, "echo: c d")]
    assert client(gw).completions.create(model="ft-bot", prompt=[[1212, 318]]).choices[0].text == "echo: 1212 318"
    assert record(gw, made.id)["request"]["prompt"] == ["a b", "c d"]


def test_a_keys_max_tokens_cap_covers_every_prompt_and_choice(gw, fake_upstream, upstream_requests):
    key = new_key(gw, f"capped-{uuid.uuid4().hex[:6]}", max_tokens=12)
    client(gw, key).completions.create(model="lora-bot", prompt=["a", "b"], n=2)
    assert received(fake_upstream)[0]["body"]["max_tokens"] == 3  # 12 tokens over 2 prompts × 2 choices
    with pytest.raises(openai.BadRequestError):
        client(gw, key).completions.create(model="lora-bot", prompt=["a", "b"], max_tokens=7)  # 14 > 12


def test_feedback_correction_reaches_a_prompt_completion_dataset(gw, tmp_path: Path):
    project = f"fb-{uuid.uuid4().hex[:6]}"
    key = new_key(gw, project)
    made = client(gw, key).completions.create(model="lora-bot", prompt="Q: where is my parcel?\nA:")
    plain = client(gw, key).completions.create(model="ft-bot", prompt="Q: refund?\nA:")
    chat = client(gw, key).chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": "hi"}])
    fb = httpx.post(f"{gw.base_url}/feedback", headers={"authorization": f"Bearer {key}"},
                    json={"completion_id": made.id, "rating": 1, "correction": " It ships tomorrow."})
    assert fb.status_code == 200, fb.text
    with pytest.raises(openai.NotFoundError):  # not a stored chat completion
        client(gw, key).chat.completions.retrieve(made.id)
    record(gw, chat.id)
    engine = db.create_engine(f"sqlite:///{gw.home}/tuneloop.db")
    try:
        rep = build(engine, BuildOptions(fmt="prompt_completion", out=tmp_path / "pc.jsonl", val_fraction=0.0,
                                         progress=False, filters=ExportFilters(project=project)))
        sft = build(engine, BuildOptions(fmt="sft", out=tmp_path / "sft.jsonl", val_fraction=0.0, progress=False,
                                         filters=ExportFilters(project=project)))
    finally:
        engine.dispose()
    lines = sorted((json.loads(x) for x in (tmp_path / "pc.jsonl").read_text().splitlines()), key=str)
    assert lines == [{"prompt": "Q: refund?\nA:", "completion": "echo: Q: refund?\nA:"},
                     {"prompt": "Q: where is my parcel?\nA:", "completion": " It ships tomorrow."}]
    assert rep["kept"] == {"corrected": 1, "ok": 1} and rep["read"] == 2
    assert sft["read"] == 1 and sft["written"]["train"] == 1  # the chat completion only
    assert plain.id != made.id


def test_a_text_completions_worst_case_counts_every_prompt_and_generation():
    from gateway.auth import Principal
    from gateway.reserve import completion_budget, estimate_text_prompt_tokens, text_generations
    from gateway.text_completion import TextAssembler

    body = {"prompt": ["abcdef", "abc"], "n": 2, "best_of": 3, "max_tokens": 10, "suffix": "xyz"}
    assert estimate_text_prompt_tokens(body) == 4 + 2 * 3  # 12 bytes / 3, plus priming per prompt
    assert estimate_text_prompt_tokens({"prompt": [[1, 2, 3], [4]]}) == 4 + 2 * 3  # token ids count one each
    key = Principal(key_id="k", project="p", limits={"tpm": 1000})
    assert text_generations(body) == 6 and completion_budget(key, body, text_generations(body)) == 60
    asm = TextAssembler()
    for text, lp in (("Hel", {"tokens": ["Hel"], "token_logprobs": [-1.0]}), ("lo", {"tokens": ["lo"],
                                                                                    "token_logprobs": [-2.0]})):
        asm.add({"id": "up", "choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": None}]})
    asm.add({"id": "up", "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
             "usage": {"total_tokens": 5}})
    out = asm.completion("cmpl-1", 1)
    assert out["choices"] == [{"index": 0, "text": "Hello", "finish_reason": "length",
                               "logprobs": {"tokens": ["Hel", "lo"], "token_logprobs": [-1.0, -2.0]}}]
    assert (out["object"], out["usage"], asm.deltas) == ("text_completion", {"total_tokens": 5}, 2)
