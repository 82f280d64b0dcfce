"""Clients nobody here wrote, against the embedded default (``tuneloop serve``: the real engine, real model).

- ``pydantic-ai``: an agent with one tool and a structured output runs to the end: it calls
  ``lookup_order`` (arguments valid against its signature, constrained by the engine), gets the
  result back, then answers through pydantic-ai's output tool with an object pydantic validates.
  Both steps are logged by the gateway with their tools and calls.
- ``instructor`` is not here: its latest release (1.17.0) requires ``jiter<0.15`` and the ``openai``
  this project pins (3.63) requires ``jiter>=0.16``; they cannot be installed together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from gateway.config import DEFAULT_MODEL
from tests.fixtures.gateway import GatewayProcess

pytestmark = pytest.mark.slow


class OrderStatus(BaseModel):
    order_id: str
    status: str


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Any:
    gateway = GatewayProcess(None, tmp_path_factory.mktemp("clients"))
    gateway.wait_ready()
    yield gateway
    gateway.stop()


def test_a_pydantic_ai_agent_with_one_tool(gw: GatewayProcess) -> None:
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.messages import ToolCallPart
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.tools import ToolDefinition

    looked_up: list[str] = []

    def called(ctx: RunContext[None]) -> bool:
        return any(isinstance(p, ToolCallPart) and p.tool_name == "lookup_order"
                   for m in ctx.messages for p in getattr(m, "parts", ()))

    @dataclass
    class LookUpFirst(AbstractCapability[None]):
        """The tool on the first step, the answer after it (pydantic-ai sends tool_choice "required")."""

        async def prepare_tools(self, ctx: RunContext[None], tool_defs: list[ToolDefinition]) -> list[ToolDefinition]:
            return [] if called(ctx) else tool_defs

        async def prepare_output_tools(self, ctx: RunContext[None],
                                       tool_defs: list[ToolDefinition]) -> list[ToolDefinition]:
            return tool_defs if called(ctx) else []

    model = OpenAIChatModel(DEFAULT_MODEL, provider=OpenAIProvider(base_url=gw.base_url, api_key="any"))
    agent = Agent(model, output_type=OrderStatus, capabilities=[LookUpFirst()],
                  instructions="You are Acme Parcel's support bot. Look orders up before answering.",
                  model_settings={"temperature": 0, "max_tokens": 80, "parallel_tool_calls": False})

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        """Look up an order's status by its number."""
        looked_up.append(order_id)
        return f"Order {order_id} shipped yesterday."

    result = agent.run_sync("Where is my order A1042?")
    assert isinstance(result.output, OrderStatus) and result.output.order_id and result.output.status
    assert len(looked_up) == 1  # the tool ran once, with a string argument pydantic-ai validated

    # the gateway logged both steps: the call, then the answer through the output tool
    deadline = time.monotonic() + 30
    while len(rows := httpx.get(f"{gw.base_url}/chat/completions", params={"limit": 10, "order": "asc"},
                                timeout=10).json()["data"]) < 2:
        assert time.monotonic() < deadline, rows  # the log writer batches
        time.sleep(0.2)
    steps = [httpx.get(f"{gw.base_url}/chat/completions/{r['id']}", timeout=10).json() for r in rows]
    calls = [c["function"]["name"] for s in steps for c in (s["choices"][0]["message"].get("tool_calls") or [])]
    assert calls == ["lookup_order", "final_result"], calls
