"""A real embedded gateway (engine child + SQLite) with a little support traffic and feedback."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapters.loop.config import LoopSettings
from adapters.registry.workspace import Workspace, open_workspace
from gateway.config import DEFAULT_MODEL
from tests.fixtures.gateway import GatewayProcess, free_port

ALIAS = DEFAULT_MODEL
GREETING = "Hi there!"
QUESTIONS = [
    "How long does standard delivery take?", "Can I change my delivery address?", "What is your refund policy?",
    "Do you ship to Canada?", "How do I track my parcel?", "What if my parcel arrives damaged?",
    "Can I schedule a pickup?", "How much does express shipping cost?", "Where is my nearest drop-off point?",
    "Can I send a parcel on Sunday?", "Do you deliver to PO boxes?", "How heavy can a parcel be?",
    "What are your support hours?", "Can I insure my parcel?", "How do I print a label?",
    "Is there a discount for businesses?",
]
ANSWER = "Please see acme.example/help."


@dataclass
class Env:
    gw: GatewayProcess
    ws: Workspace
    replies: dict[str, str]  # question -> the base model's greedy reply before any promotion


def ask(gw: GatewayProcess, question: str, user: str | None = None, model: str = ALIAS) -> Any:
    extra = {"user": user} if user else {}
    return gw.client().chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                               temperature=0, max_tokens=12, **extra)


def feedback(gw: GatewayProcess, completion_id: str, **body: Any) -> None:
    resp = httpx.post(f"{gw.base_url}/feedback", json={"completion_id": completion_id, **body}, timeout=10)
    assert resp.status_code == 200, resp.text


def settings(**training: Any) -> LoopSettings:
    return LoopSettings.model_validate({
        "min_feedback": 16,
        "dataset": {"val_fraction": 0.25},
        "training": {"n_epochs": 3, "batch_size": 4, "learning_rate": 3e-3, "max_length": 48,
                     "warmup_steps": 1, **training},
        "eval": {"checks": [f"contains:{GREETING}"], "max_tokens": 12},
    })


@pytest.fixture(scope="module")
def loop_env(tmp_path_factory) -> Any:
    home = tmp_path_factory.mktemp("loop-home")
    port = free_port()
    gw = GatewayProcess(None, home, args=["--engine-port", str(port)],
                        env={"TUNELOOP_TRAIN_THREADS": "1"})
    try:
        gw.wait_ready()
        replies = {}
        with ThreadPoolExecutor(4) as pool:  # real traffic through the gateway
            done = list(pool.map(lambda q: (q, ask(gw, q)), QUESTIONS))
        for q, reply in done:
            replies[q] = reply.choices[0].message.content
            # every reply is rated down and corrected in the house style
            feedback(gw, reply.id, rating=-1, correction={"role": "assistant", "content": f"{GREETING} {ANSWER}"})
        ws = open_workspace(home=home, gateway_url=gw.base_url, engine_port=port)
        yield Env(gw, ws, replies)
    finally:
        gw.stop()
