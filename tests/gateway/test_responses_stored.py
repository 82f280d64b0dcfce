"""Stored responses beyond one gateway's defaults: tenancy (another project's response is a 404, as
OpenAI's), and training (a response is logged as a chat interaction, so the dataset build makes an SFT
line of it, tools and tool results included); deleting a response erases that interaction too."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from adapters.datasets.build import BuildOptions, build
from gateway.log.export import ExportFilters
from gateway.store import db
from tests.fixtures.gateway import GatewayProcess, fake_config
from tests.gateway.test_responses import TOOL


@pytest.fixture(scope="module")
def secured(fake_upstream, tmp_path_factory):
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path_factory.mktemp("responses-auth"),
                        env={"TUNELOOP_AUTH": "required"})
    yield gw
    gw.stop()


def test_another_projects_response_is_not_found(secured):
    alpha = secured.client(api_key=secured.make_key("--project", "alpha"))
    beta = secured.client(api_key=secured.make_key("--project", "beta"))
    mine = alpha.responses.create(model="lora-bot", input="alpha's secret")
    for attempt in (lambda: beta.responses.retrieve(mine.id), lambda: beta.responses.input_items.list(mine.id),
                    lambda: beta.responses.delete(mine.id),
                    lambda: beta.responses.create(model="lora-bot", input="and?", previous_response_id=mine.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert alpha.responses.retrieve(mine.id).output_text == "echo: alpha's secret"
    follow = alpha.responses.create(model="lora-bot", input="and?", previous_response_id=mine.id)
    assert follow.output_text == "echo: and?"
    with pytest.raises(openai.AuthenticationError):
        secured.client(api_key="tl-not-a-key").responses.create(model="lora-bot", input="hi")
    no_key = httpx.post(f"{secured.base_url}/responses", json={"model": "lora-bot", "input": "hi"}, timeout=10)
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"


def test_a_tool_conversation_becomes_an_sft_line(gateway, tmp_path: Path):
    case = uuid.uuid4().hex
    client = gateway.client()
    first = client.responses.create(model="tools-bot", input="weather in Paris?", tools=[TOOL],
                                    metadata={"case": case}, instructions="You are a weather bot.")
    call = first.output[0]
    assert call.type == "function_call"
    raw = client.responses.with_raw_response.create(
        model="lora-bot", previous_response_id=first.id, tools=[TOOL], metadata={"case": case},
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
               {"role": "user", "content": "thanks"}])
    completion_id = raw.headers["x-request-id"]
    logged = client.chat.completions.retrieve(completion_id)  # read-your-writes: the record is in
    assert logged.choices[0].message.content == "echo: thanks"

    out = tmp_path / "sft.jsonl"
    report = build(db.create_engine(f"sqlite:///{gateway.home / 'tuneloop.db'}"),
                   BuildOptions(fmt="sft", out=out, val_fraction=0.0, progress=False,
                                filters=ExportFilters(metadata={"case": case})))
    assert report["written"] == {"train": 2, "val": 0}, report
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    tool_turn = next(ln for ln in lines if ln["messages"][-1].get("tool_calls"))
    assert tool_turn["messages"][0] == {"role": "system", "content": "You are a weather bot."}
    assert tool_turn["tools"][0]["function"]["name"] == "get_weather"
    last = next(ln for ln in lines if ln is not tool_turn)
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "tool", "user", "assistant"]
    assert last["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert last["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": call.call_id}
    assert last["messages"][-1] == {"role": "assistant", "content": "echo: thanks"}

    client.responses.delete(raw.parse().id)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(completion_id)  # its interaction went with it


def test_erasing_the_chat_completion_erases_its_response(gateway):
    client = gateway.client()
    raw = client.responses.with_raw_response.create(model="lora-bot", input="forget me")
    response = raw.parse()
    client.chat.completions.delete(raw.headers["x-request-id"])
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
