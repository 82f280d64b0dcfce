"""The engine's chat-template path (sandboxed render + tokenize) against ``tokenizer.apply_chat_template``."""

from __future__ import annotations

import asyncio

import pytest
from transformers import AutoTokenizer

from adapters.engine.model import ensure_cached
from adapters.engine.protocol import normalize_messages
from adapters.engine.template import ChatTemplate, TemplateError
from tests.fixtures import engine as engine_fixtures

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|> there"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": [{"type": "text", "text": "Parts"}]}],
    [{"role": "user", "content": "ünïcödé 🌍\n\n  spaces  "}, {"role": "assistant", "content": None}],
]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ensure_cached(engine_fixtures.test_home()))


@pytest.fixture(scope="module")
def chat(tok) -> ChatTemplate:
    return ChatTemplate(tok, 8192)


def encode(chat: ChatTemplate, messages, kwargs=None, agp=True, explicit=False, cont=False, template=None):
    src, ctx, c = chat.context(normalize_messages(messages), kwargs, template, agp, explicit, cont)
    return asyncio.run(chat.encode(src, ctx, c))


@pytest.mark.parametrize("messages", CHATS)
@pytest.mark.parametrize("agp", [True, False])
def test_same_ids_as_apply_chat_template(tok, chat, messages, agp):
    want = tok.apply_chat_template(normalize_messages(messages), add_generation_prompt=agp, tokenize=True,
                                   return_dict=False)
    assert encode(chat, messages, agp=agp) == list(want)
    assert encode(chat, messages, {"add_generation_prompt": agp}, agp=not agp) == list(want)


def test_continue_final_message_as_transformers(tok, chat):
    msgs = [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One, two,"}]
    want = tok.apply_chat_template(msgs, continue_final_message=True, tokenize=True, return_dict=False)
    assert encode(chat, msgs, cont=True) == list(want)
    assert encode(chat, msgs, {"continue_final_message": True}) == list(want)
    with pytest.raises(TemplateError) as e:
        encode(chat, msgs, {"continue_final_message": True, "add_generation_prompt": True})
    assert e.value.param == "continue_final_message"


@pytest.mark.parametrize("key", ["chat_template", "tokenize", "truncation", "max_length", "return_tensors",
                                 "padding", "messages", "bos_token", "tools", "tokenizer_kwargs"])
def test_only_template_variables_are_accepted(chat, key):
    with pytest.raises(TemplateError) as e:
        encode(chat, CHATS[0], {key: "x"})
    assert e.value.param == f"chat_template_kwargs.{key}"


def test_flags_must_be_booleans(chat):
    assert encode(chat, CHATS[0], {"enable_thinking": False}) == encode(chat, CHATS[0])
    with pytest.raises(TemplateError, match="must be a boolean"):
        encode(chat, CHATS[0], {"add_generation_prompt": "yes"})


def test_untrusted_request_template_is_refused(chat):
    with pytest.raises(TemplateError, match="--trust-request-chat-template is not set") as e:
        encode(chat, CHATS[0], template="{{ messages[0].content }}")
    assert e.value.param == "chat_template"


def test_limits_on_the_models_own_template(tok):
    small = ChatTemplate(tok, 64)  # max_chars = 64 x the longest token
    with pytest.raises(TemplateError) as e:
        encode(small, [{"role": "user", "content": "x" * (small.max_chars + 1)}])
    assert e.value.code == "context_length_exceeded" and e.value.param == "messages"
