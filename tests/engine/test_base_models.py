"""Any local Hugging Face checkpoint as the engine's base: Llama (3.1 rope scaling), Mistral (sliding
window), Qwen2 (q/k/v biases, per-layer sliding window), Qwen3 (q/k norms), with vLLM's flags.

Each family is a random-initialised small checkpoint made here with ``transformers``
(``tests/fixtures/base_models.py``, SmolLM2's tokenizer with a chat template of its own).  The
engine's greedy reply must be ``transformers``' ``generate(do_sample=False)`` for the same
chat-templated prompt, on the base and with a peft LoRA on q/k/v/o/gate/up/down (base and
adapter requests sent together, so they share batches).  Replies are compared as text
(the engine's API returns text) plus token counts.

Qwen2 is served by a real ``tuneloop engine --model PATH`` process with ``--lora-modules`` in
both of vLLM's forms; the other families by in-process :class:`Engine` objects behind the
same ASGI app and uvicorn on loopback (each extra interpreter costs ~10 s of CPU on 2 cores).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from adapters.models.arch import SUPPORTED, ModelError, resolve
from adapters.models.generation import NEUTRAL, load_generation_defaults
from adapters.models.options import OptionError, model_options, parse_lora_module
from tests.fixtures.base_models import (
    ThreadServer,
    make_checkpoint,
    make_lora,
    smollm2_tokenizer,
    start_engine_process,
    wait_healthy,
)

pytestmark = pytest.mark.slow

FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]
PROMPT = "What is the capital of France? Tell me more."
MAX = 16
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant (FAMILY):{% endif %}")
# generation_config.json the engine must honour for requests that leave sampling fields out
GENERATION = {"mistral": {"temperature": 0.7, "top_k": 1, "max_new_tokens": 10},
              "qwen3": {"temperature": 0.6, "top_k": 1, "repetition_penalty": 1.3}}  # + an extra eos id


@dataclass
class Served:
    family: str
    path: Path
    name: str  # the served model name
    url: str  # root URL of the engine serving it
    tokenizer: Any
    prompt: list[int]  # the chat-templated prompt, as transformers renders it
    base: list[int]  # transformers' greedy tokens, base model
    lora: list[int]  # ... with the LoRA
    eos: set[int]

    @property
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="x", max_retries=0, timeout=120)


def greedy(model: Any, prompt: list[int], max_new: int | None = MAX) -> list[int]:
    import torch

    kw = {} if max_new is None else {"max_new_tokens": max_new}
    out = model.generate(torch.tensor([prompt]), do_sample=False, **kw)
    return out[0, len(prompt):].tolist()


def write_generation_config(path: Path, extra: dict[str, Any], model: Any) -> None:
    from transformers import GenerationConfig

    file = path / "generation_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **extra}))
    model.generation_config = GenerationConfig.from_pretrained(path)


def build(family: str, root: Path, seed: int) -> tuple[Any, Path, list[int], Any]:
    """The checkpoint (Llama's in safetensors shards with their index; Qwen2's chat template in
    tokenizer_config.json, the older layout)."""
    from transformers import AutoTokenizer

    path = root / family
    model = make_checkpoint(family, path, TEMPLATE.replace("FAMILY", family), seed=seed,
                            template_in_config=family == "qwen2", max_shard_size="4MB" if family == "llama" else None)
    assert family != "llama" or (path / "model.safetensors.index.json").is_file()
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    if family in GENERATION:
        write_generation_config(path, GENERATION[family], model)
    if family == "qwen3":  # a second eos id, one that greedy decoding reaches after 10 tokens
        first = greedy(model, prompt)
        extra = next(t for i, t in enumerate(first) if i >= 10 and t not in first[:i] and t > 16)
        write_generation_config(path, {"eos_token_id": [tok.eos_token_id, extra]}, model)
    return model, path, prompt, tok


def references(model: Any, path: Path, prompt: list[int], seed: int) -> tuple[list[int], list[int]]:
    cap = GENERATION.get(path.name, {}).get("max_new_tokens", MAX)
    base = greedy(model, prompt, min(MAX, cap))
    lora_model = make_lora(model, path / "lora", seed=seed)
    lora = greedy(lora_model, prompt, min(MAX, cap))
    assert base != lora  # the adapter changes the reply, so serving it without the adapter would fail
    return base, lora


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from adapters.engine.engine import Engine

    root = tmp_path_factory.mktemp("base-models")
    made = {"qwen2": build("qwen2", root, seed=3)}
    q2_path = made["qwen2"][1]
    q2_refs = references(made["qwen2"][0], q2_path, made["qwen2"][2], seed=13)
    lora_b = json.dumps({"name": "qwen2-lora-b", "path": str(q2_path / "lora"), "base_model_name": "qwen2-parent"})
    proc, url, log = start_engine_process(
        ["--model", str(q2_path), "--enable-lora", "--max-lora-rank", "8", "--threads", "1", "--max-batch", "8",
         "--lora-modules", f"qwen2-lora={q2_path / 'lora'}", lora_b], root, "qwen2-engine.log")
    gpt2 = gpt2_checkpoint(root / "gpt2")
    refused = start_engine_process(["--model", str(gpt2)], root, "gpt2-engine.log")
    out, servers = {}, []
    try:
        for i, fam in enumerate(FAMILIES):
            model, path, prompt, tok = made.get(fam) or build(fam, root, seed=i)
            base, lora = q2_refs if fam == "qwen2" else references(model, path, prompt, seed=10 + i)
            eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                      else [model.generation_config.eos_token_id])
            if fam == "qwen2":
                out[fam] = Served(fam, path, str(path), url, tok, prompt, base, lora, eos)
                continue
            engine = Engine(home=root, model=str(path), served_model_name=f"{fam}-base", enable_lora=True,
                            max_lora_rank=8, lora_modules=[(f"{fam}-lora", path / "lora", None)], threads=1,
                            max_batch=8)
            servers.append(ThreadServer(engine))
            out[fam] = Served(fam, path, f"{fam}-base", servers[-1].url, tok, prompt, base, lora, eos)
        for s in servers:
            s.wait()
        wait_healthy(proc, url, log)
        yield {"families": out, "refused": refused, "root": root}
    finally:
        for s in servers:
            s.stop()
        for p in (proc, refused[0]):
            p.terminate()
            p.wait(timeout=15)


def gpt2_checkpoint(path: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = smollm2_tokenizer()
    cfg = AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok))
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def expected(s: Served, tokens: list[int]) -> tuple[str, str]:
    """The reply text and finish reason for greedy ``tokens``: as vLLM, a stop token's text is left out, and
    a trailing partial UTF-8 token is held back."""
    stopped = bool(tokens) and tokens[-1] in s.eos
    text = s.tokenizer.decode(tokens[:-1] if stopped else tokens, skip_special_tokens=True).rstrip("\ufffd")
    return text, "stop" if stopped else "length"


def ask(s: Served, model: str, **kw: Any) -> Any:
    return s.client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_equal_transformers_base_and_lora(served, family):
    s: Served = served["families"][family]
    adapter = f"{family}-lora"
    with ThreadPoolExecutor(2) as pool:  # together, so base and adapter rows share decode steps
        replies = list(pool.map(lambda m: ask(s, m, temperature=0, max_tokens=MAX,
                                              extra_body={"return_token_ids": True}), [s.name, adapter]))
    for reply, tokens in zip(replies, [s.base, s.lora], strict=True):
        text, finish = expected(s, tokens)
        assert reply.choices[0].message.content == text
        assert reply.choices[0].finish_reason == finish
        assert reply.usage.completion_tokens == len(tokens)
        assert reply.usage.prompt_tokens == len(s.prompt)  # the checkpoint's own chat template
        assert reply.choices[0].token_ids == tokens  # vLLM's return_token_ids: the very ids
        assert reply.prompt_token_ids == s.prompt
        assert reply.usage.prompt_tokens_details is None  # no --enable-prompt-tokens-details: vLLM's shape


def test_models_list_reports_served_name_root_and_parents(served):
    fams = served["families"]
    for fam in ("llama", "qwen3"):
        cards = {m.id: m.model_dump() for m in fams[fam].client.models.list().data}
        assert cards[f"{fam}-base"]["root"] == str(fams[fam].path) and cards[f"{fam}-base"]["parent"] is None
        assert cards[f"{fam}-lora"]["parent"] == f"{fam}-base"
        assert cards[f"{fam}-base"]["max_model_len"] == 512
    q2 = fams["qwen2"]  # the real `tuneloop engine`: no --served-model-name, so the id is the --model path
    cards = {m.id: m.model_dump() for m in q2.client.models.list().data}
    assert set(cards) == {str(q2.path), "qwen2-lora", "qwen2-lora-b"}
    assert cards[str(q2.path)]["root"] == str(q2.path)
    assert cards["qwen2-lora"]["parent"] == str(q2.path)
    assert cards["qwen2-lora-b"]["parent"] == "qwen2-parent"  # vLLM's JSON form: base_model_name
    assert cards["qwen2-lora-b"]["root"] == str(q2.path / "lora")
    reply = ask(q2, "qwen2-lora-b", temperature=0, max_tokens=MAX)
    assert reply.choices[0].message.content == expected(q2, q2.lora)[0]


def test_generation_config_supplies_defaults(served):
    """Requests without sampling fields take the model's generation_config.json (vLLM's ``auto``):
    Mistral's top_k=1 and max_new_tokens=10, Qwen3's top_k=1, repetition_penalty and extra eos id."""
    mistral, qwen3 = served["families"]["mistral"], served["families"]["qwen3"]
    reply = ask(mistral, mistral.name)
    assert len(mistral.base) == 10
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == expected(mistral, mistral.base)
    reply = ask(qwen3, qwen3.name, max_tokens=MAX)
    extra = qwen3.eos - {qwen3.tokenizer.eos_token_id}
    assert len(qwen3.base) > 10 and qwen3.base[-1] in extra  # transformers stopped on the extra eos id ...
    assert reply.choices[0].finish_reason == "stop"  # ... and so did the engine
    assert reply.choices[0].message.content == expected(qwen3, qwen3.base)[0]


def test_adapter_rules_on_load(served):
    """vLLM's LoRA loader rules: rank <= --max-lora-rank, targets among q/k/v/o/gate/up/down, bias none, no
    modules_to_save, shapes of this base; each a 400 in OpenAI's envelope naming the problem."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    s: Served = served["families"]["llama"]
    root = served["root"] / "rule-adapters"
    bad = {
        "rank16": ({"r": 16}, "LoRA rank 16 is greater than max_lora_rank 8"),
        "embed": ({"modules": ["q_proj", "embed_tokens"]}, "expected target modules"),
        "saved": ({"modules": ["q_proj"], "modules_to_save": ["lm_head"]}, "modules_to_save"),
        "bias": ({"modules": ["q_proj"], "bias": "lora_only"}, "bias"),
    }
    for name, (kw, _) in bad.items():
        make_lora(AutoModelForCausalLM.from_pretrained(s.path), root / name, **kw)
    other = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=256))
    make_lora(other, root / "other")
    bad["other"] = ({}, "trained for another base model")
    for name, (_, message) in bad.items():
        r = httpx.post(s.url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(root / name)})
        assert r.status_code == 400, (name, r.text)
        assert message in r.json()["error"]["message"] and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(s.url + "/v1/load_lora_adapter", json={"lora_name": "again", "lora_path": str(s.path / "lora")})
    assert r.status_code == 200
    assert ask(s, "again", temperature=0, max_tokens=MAX).choices[0].message.content == expected(s, s.lora)[0]


def test_lora_off_by_default_with_model(served):
    """As vLLM: with --model, adapters need --enable-lora."""
    from adapters.engine.engine import Engine
    from adapters.engine.lora import AdapterError

    s: Served = served["families"]["mistral"]
    engine = Engine(home=served["root"], model=str(s.path), threads=1)
    assert engine.model_name == str(s.path)
    with pytest.raises(AdapterError, match="--enable-lora"):
        engine.add_adapter("x", s.path / "lora")


def test_chat_template_flag_and_checkpoints_without_one(served, tmp_path):
    """vLLM's --chat-template (a file or the template itself); without one, a template-less checkpoint is
    refused at start (this engine serves chat only)."""
    from adapters.engine.engine import Engine

    src = served["families"]["mistral"].path
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "chat_template.jinja":
            (bare / f.name).symlink_to(f)
    with pytest.raises(ModelError, match="no chat template.*--chat-template"):
        Engine(home=served["root"], model=str(bare), threads=1)
    template = TEMPLATE.replace("FAMILY", "flag")
    (tmp_path / "t.jinja").write_text(template)
    for value in (str(tmp_path / "t.jinja"), template):
        engine = Engine(home=served["root"], model=str(bare), threads=1, chat_template=value)
        assert engine.tokenizer.chat_template == template
    with pytest.raises(ModelError, match="no such file"):
        Engine(home=served["root"], model=str(bare), threads=1, chat_template=str(tmp_path / "missing.jinja"))


def test_unsupported_architecture_refused_at_start(served):
    proc, _, log = served["refused"]
    assert proc.wait(timeout=120) == 2
    text = log.read_text()
    assert "Unsupported model architecture GPT2LMHeadModel" in text
    assert all(name in text for name in SUPPORTED)


def test_resolve_refuses_what_the_forward_cannot_run():
    from transformers import AutoConfig

    with pytest.raises(ModelError, match="Unsupported rope type 'longrope'"):
        resolve(AutoConfig.for_model("llama", architectures=["LlamaForCausalLM"], rope_parameters={
            "rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 8, "long_factor": [1.0] * 8}))
    with pytest.raises(ModelError, match="hidden_act"):
        resolve(AutoConfig.for_model("mistral", architectures=["MistralForCausalLM"], hidden_act="gelu"))
    with pytest.raises(ModelError, match="LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"):
        resolve(AutoConfig.for_model("phi3", architectures=["Phi3ForCausalLM"]))
    q2 = resolve(AutoConfig.for_model("qwen2", architectures=["Qwen2ForCausalLM"], num_hidden_layers=4))
    assert q2.qkv_bias and not q2.o_bias and q2.windows == (None,) * 4  # use_sliding_window off by default


def test_generation_config_modes(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "eos_token_id": [5, 6]}))
    auto = load_generation_defaults(tmp_path, "auto")
    assert auto.sampling == {**NEUTRAL, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    assert auto.eos_ids == {5, 6}
    vllm = load_generation_defaults(tmp_path, "vllm")
    assert vllm.sampling == NEUTRAL and vllm.eos_ids == {5, 6}  # eos ids count in every mode
    other = tmp_path / "other"
    other.mkdir()
    (other / "generation_config.json").write_text(json.dumps({"temperature": 0.1, "max_new_tokens": 7}))
    folder = load_generation_defaults(tmp_path, str(other))
    assert folder.sampling["temperature"] == 0.1 and folder.max_tokens == 7
    with pytest.raises(ModelError, match="no generation_config.json"):
        load_generation_defaults(tmp_path, str(tmp_path / "missing"))


def test_lora_modules_flag_forms():
    assert parse_lora_module("a=/x/y") == ("a", Path("/x/y"), None)
    assert parse_lora_module('{"name": "b", "path": "/p", "base_model_name": "m"}') == ("b", Path("/p"), "m")
    with pytest.raises(OptionError, match="Invalid JSON"):
        parse_lora_module("{nope")
    with pytest.raises(OptionError, match="Invalid fields"):
        parse_lora_module('{"name": "b", "path": "/p", "rank": 8}')
    opts = model_options(None, None, None, None, True, 16, ["a=/x"], ["b=/y"])
    assert [m[0] for m in opts["lora_modules"]] == ["a", "b"]
    with pytest.raises(OptionError, match="Unexpected arguments: --bogus"):
        model_options(None, None, None, None, True, 16, ["a=/x"], ["--bogus"])
