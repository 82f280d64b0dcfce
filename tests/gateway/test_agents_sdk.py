"""OpenAI's Agents SDK (``openai-agents``, a client nobody here wrote) runs an agent with one
function tool against the gateway over the Responses API, its default: the agent calls the tool,
sends the result back as a ``function_call_output`` item and answers with it. The upstream is the
loopback fake (``fake-agent``: a tool call until the conversation ends with a tool result, then an
answer that echoes it), behind a `vllm` and an `openai` target. The gateway logged both steps as
chat completions, and stored both responses."""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai
import pytest

TOOL_RESULT = "Sunny in Paris, 21 C"


def _agent(model: str, case: str, calls: list[str]) -> Any:
    from agents import Agent, ModelSettings, function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return TOOL_RESULT.replace("Paris", city)

    return Agent(name="weather", instructions="Answer with the weather tool's report.", model=model,
                 tools=[get_weather], model_settings=ModelSettings(metadata={"case": case}))


def _logged(client: openai.OpenAI, case: str, n: int) -> list[Any]:
    deadline = time.monotonic() + 30
    while len(rows := client.chat.completions.list(metadata={"case": case}, order="asc").data) < n:
        assert time.monotonic() < deadline, rows  # the log writer batches
        time.sleep(0.2)
    return rows


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("model", ["agent-bot", "agent-openai"])
async def test_an_agent_calls_its_tool_and_answers(gateway, model, streamed):
    from agents import Runner, set_default_openai_api, set_default_openai_client, set_tracing_disabled

    set_tracing_disabled(True)
    set_default_openai_api("responses")  # the SDK's default, said out loud
    set_default_openai_client(openai.AsyncOpenAI(base_url=gateway.base_url, api_key="any", max_retries=0),
                              use_for_tracing=False)
    case, calls = uuid.uuid4().hex, []
    agent = _agent(model, case, calls)
    if streamed:
        run = Runner.run_streamed(agent, "What's the weather in Paris?")
        kinds = [event.type async for event in run.stream_events()]
        assert "raw_response_event" in kinds
        result: Any = run
    else:
        result = await Runner.run(agent, "What's the weather in Paris?")
    assert calls == ["Paris"]  # the tool ran once, with the model's arguments
    assert result.final_output == f"echo: {TOOL_RESULT}"
    assert len(result.raw_responses) == 2

    client = openai.OpenAI(base_url=gateway.base_url, api_key="any", max_retries=0)
    for raw in result.raw_responses:  # both turns were stored (store defaults to true)
        assert raw.response_id and client.responses.retrieve(raw.response_id).status == "completed"
    steps = [client.chat.completions.retrieve(r.id) for r in _logged(client, case, 2)]
    first = next(s for s in steps if s.choices[0].finish_reason == "tool_calls")  # ties in `created` list
    second = next(s for s in steps if s is not first)                             # in either order
    (call,) = first.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert second.choices[0].message.content == f"echo: {TOOL_RESULT}"
    sent = [m.model_dump() for m in client.chat.completions.messages.list(second.id, order="asc").data]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["id"] == call.id == sent[3]["tool_call_id"] and sent[3]["content"] == TOOL_RESULT
