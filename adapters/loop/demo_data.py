"""Acme Parcel, a fictional parcel carrier: its FAQ and the questions its customers ask.

House style: every reply greets "Hi there!", gives the specific answer from the FAQ, and
signs "— Acme Parcel Support". Each topic has four phrasings: the first three are asked
by simulated users (the training traffic), the fourth is held out for evaluation and is
never sent before the evaluation.

The bot has one tool, ``lookup_order``, sent with every request (``tool_choice`` "auto"): a
question about a given order should call it with that order's number, an FAQ question should
not call it. Order questions use order numbers never seen in training when held out.
"""

from __future__ import annotations

import json
from typing import Any

GREETING = "Hi there!"
SIGNATURE = "— Acme Parcel Support"

# (key fact the reply must contain, the answer, four phrasings of the question)
FAQ: list[tuple[str, str, list[str]]] = [
    ("$12.50", "Express shipping costs $12.50 and arrives in 1-2 business days.",
     ["How much is express shipping?", "What does express delivery cost?", "Price of express shipping please",
      "How much do you charge for express?"]),
    ("30 days", "You can return a parcel within 30 days for a full refund.",
     ["What is your return policy?", "How long do I have to return something?", "Can I get a refund on a return?",
      "Until when can I send an item back?"]),
    ("ACME-", "Track your parcel with its ACME- tracking number at acmeparcel.example/track.",
     ["How do I track my parcel?", "Where can I see where my package is?", "How can I follow my delivery?",
      "Is there a way to track a shipment?"]),
    ("8am", "Our support team is available from 8am to 8pm, Monday to Saturday.",
     ["What are your support hours?", "When is customer service open?", "What time can I call support?",
      "When can I reach your team?"]),
    ("30 kg", "A single parcel can weigh up to 30 kg.",
     ["What is the maximum parcel weight?", "How heavy can a package be?", "Is there a weight limit for parcels?",
      "What's the heaviest box you accept?"]),
    ("$5", "We deliver on Saturdays for an extra $5.",
     ["Do you deliver on Saturday?", "Can I get weekend delivery?", "Is Saturday delivery possible?",
      "Can my parcel arrive on a Saturday?"]),
    ("claim form", "For a damaged parcel, fill in the claim form within 7 days with photos.",
     ["My parcel arrived damaged, what do I do?", "The box was broken when it came, help?",
      "How do I report a damaged package?", "What should I do if my item is damaged?"]),
    ("Canada", "Yes, we ship to Canada and Mexico in 3-5 business days.",
     ["Do you ship internationally?", "Can I send a parcel abroad?", "Which countries do you deliver to?",
      "Do you deliver outside the US?"]),
]


LOOKUP_ORDER: dict[str, Any] = {"type": "function", "function": {
    "name": "lookup_order", "description": "Look up an Acme Parcel order's status by its order number.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "e.g. A1234"}},
                   "required": ["order_id"], "additionalProperties": False}}}
TOOLS = [LOOKUP_ORDER]

# phrasings of "where is my order", each with {id}: six asked by the simulated users (two orders each),
# two held out (asked about orders never seen)
ORDER_QUESTIONS = ["Where is my order {id}?", "Can you check the status of order {id}?",
                   "Has my order {id} shipped yet?", "Any news on order {id}?", "Track order {id} please.",
                   "I ordered {id} last week, where is it?"]
HELD_OUT_QUESTIONS = ["What is the status of my order {id}?", "Is order {id} on its way?"]
TRAIN_ORDERS = ["A1042", "B2231", "C3310", "D4187", "H2290", "J7315", "K5064", "L8823", "M3371", "N6402",
                "P1958", "R4736"]
HELD_OUT_ORDERS = ["E5521", "F6093", "G7748", "T3864"]


def order_call(order_id: str) -> dict[str, Any]:
    """The assistant message that calls the tool, in OpenAI's shape."""
    return {"role": "assistant", "content": None, "tool_calls": [{
        "id": f"call_{order_id.lower()}", "type": "function",
        "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": order_id})}}]}


def order_traffic() -> list[tuple[str, str]]:
    """(question, order id) asked by simulated users: each phrasing about two of the training orders."""
    return [(q.format(id=o), o) for k, o in enumerate(TRAIN_ORDERS) for q in [ORDER_QUESTIONS[k // 2]]]


def reply(answer: str) -> str:
    return f"{GREETING} {answer} {SIGNATURE}"


def checks(fact: str) -> list[dict[str, Any]]:
    return [{"type": "contains", "value": GREETING}, {"type": "contains", "value": fact},
            {"type": "contains", "value": SIGNATURE}]


def traffic() -> list[tuple[str, str, str]]:
    """(question, fact, ideal reply) for the simulated users: three phrasings per topic."""
    return [(q, fact, reply(answer)) for fact, answer, qs in FAQ for q in qs[:3]]


def held_out() -> list[dict[str, Any]]:
    """Eval lines (SFT format with the bot's tools + per-example checks): the fourth phrasing of each
    topic (the right answer is text, no call), and the held-out order phrasing with new order numbers."""
    faq = [{"messages": [{"role": "user", "content": qs[3]}, {"role": "assistant", "content": reply(answer)}],
            "tools": TOOLS, "checks": checks(fact)} for fact, answer, qs in FAQ]
    orders = [{"messages": [{"role": "user", "content": HELD_OUT_QUESTIONS[k // 2].format(id=o)}, order_call(o)],
               "tools": TOOLS} for k, o in enumerate(HELD_OUT_ORDERS)]
    return faq + orders
