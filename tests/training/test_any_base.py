"""Fine-tuning on a base the project has never seen: a random-initialised Qwen2 checkpoint in the
gateway's ``base_models`` catalog, served by ``tuneloop engine --model PATH --served-model-name
NAME``, trained through the real ``openai`` SDK (files + jobs) by real worker processes. Every
adapter passes vLLM's loader rules, and the fine-tuned model answers through the gateway at once
with the greedy tokens ``transformers`` + ``peft`` give with that adapter. The rules themselves
refuse what vLLM refuses; values the local trainer cannot honour are 400s."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from adapters.training.vllm_rules import check_vllm, vllm_compatible
from gateway.store import db
from gateway.store.routes import RouteStore
from tests.fixtures.gateway import GatewayProcess
from tests.training.data import dpo_rows, sft_rows, write_jsonl
from tests.training.spec_check import validate

BASE = "tiny-qwen2"
FAST = {"n_epochs": 1, "batch_size": 2, "max_length": 48, "max_steps": 2}
MSG = [{"role": "system", "content": "Support bot."}, {"role": "user", "content": "Refund window?"}]


@pytest.fixture(scope="module")
def engine(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.fixtures.base_models import start_engine_process, wait_healthy

    home = tmp_path_factory.mktemp("tiny-engine")
    proc, url, log = start_engine_process(["--model", str(tiny_base), "--served-model-name", BASE, "--enable-lora",
                                           "--threads", "1", "--max-batch", "4"], home, "engine.log")
    try:
        wait_healthy(proc, url, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def gw(tiny_base: Path, engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"targets": {"gpu": {"kind": "vllm", "base_urls": [engine + "/v1"], "timeout_s": 120},
                          "idle": {"kind": "vllm", "base_urls": ["http://127.0.0.1:9/v1"]}},  # serves nothing
              "models": {}, "base_models": {BASE: str(tiny_base)}}
    gateway = GatewayProcess(config, tmp_path_factory.mktemp("any-base"), env={"TUNELOOP_TRAIN_THREADS": "1"})
    yield gateway
    gateway.stop()


def _upload(client: openai.OpenAI, path: Path) -> str:
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune").id


def _wait(client: openai.OpenAI, job_id: str, timeout: float = 240) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status}")


def test_sft_and_dpo_jobs_on_a_catalog_base_make_adapters_vllm_loads(gw: GatewayProcess, tiny_base: Path,
                                                                    tmp_path: Path) -> None:
    client = gw.client()
    sft_file = _upload(client, write_jsonl(tmp_path / "sft.jsonl", sft_rows()))
    dpo_file = _upload(client, write_jsonl(tmp_path / "dpo.jsonl", dpo_rows()))
    sft = client.fine_tuning.jobs.create(model=BASE, training_file=sft_file, suffix="any",
                                         method={"type": "supervised", "supervised": {"hyperparameters": {
                                             **FAST, "micro_batch_size": 1, "lora_r": 4}}})
    dpo = client.fine_tuning.jobs.create(model=BASE, training_file=dpo_file,
                                         method={"type": "dpo", "dpo": {"hyperparameters": {**FAST, "beta": 0.2}}})
    validate("FineTuningJob", sft.model_dump(exclude_unset=True))
    assert sft.model == BASE and "_local" not in json.dumps(sft.model_dump())
    for job, rank in ((sft, 4), (dpo, 8)):
        done = _wait(client, job.id)
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=50)]
        assert done.status == "succeeded", (done.error, events)
        assert done.fine_tuned_model.startswith(f"{BASE}-ft-")
        folder = gw.home / "adapters" / done.fine_tuned_model
        assert check_vllm(folder, 16, base_model=str(tiny_base)) == [] and vllm_compatible(folder)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        assert cfg["r"] == rank and cfg["base_model_name_or_path"] == str(tiny_base)
        meta = json.loads((folder / "tuneloop.json").read_text())
        assert meta["base_model"]["name"] == BASE and meta["base_model"]["architecture"] == "Qwen2ForCausalLM"
        assert meta["steps"] == 2
        # routed at once to the target serving the base (its /v1/models lists BASE), not to "idle"
        assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
        entry, _ = RouteStore(db.create_engine(db.default_database_url(gw.home))).get(done.fine_tuned_model)
        assert [(r["target"], r["model"], r["lora_path"]) for r in entry["routes"]] == [
            ("gpu", done.fine_tuned_model, str(folder))]
    ft = client.fine_tuning.jobs.retrieve(sft.id).fine_tuned_model
    reply = client.chat.completions.create(model=ft, messages=MSG, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == _peft_greedy(tiny_base, gw.home / "adapters" / ft, 8)


def _peft_greedy(base: Path, adapter: Path, max_new: int) -> str:
    """``transformers`` + ``peft`` with the adapter: greedy reply text, as vLLM returns it (no stop token)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
    prompt = list(tok.apply_chat_template(MSG, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"])
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new)[0, len(prompt):].tolist()
    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    if out and out[-1] in stops:
        out = out[:-1]
    return tok.decode(out, skip_special_tokens=True).rstrip("\ufffd")


@pytest.mark.parametrize(("hp", "param"), [
    ({"qlora": True}, "method.supervised.hyperparameters.qlora"),  # no bitsandbytes (nor CUDA) here
    ({"lora_r": 32}, "method.supervised.hyperparameters.lora_r"),  # above vLLM's default --max-lora-rank
    ({"lora_dropout": 0.1}, "method.supervised.hyperparameters.lora_dropout"),  # unknown: never ignored
    ({"target_modules": ["lm_head"]}, "method.supervised.hyperparameters.target_modules"),
    ({"beta": 0.1}, "method.supervised.hyperparameters.beta"),  # DPO only
    ({"n_epochs": 0}, "method.supervised.hyperparameters.n_epochs"),
    ({"n_epochs": 1_000_000_000}, "method.supervised.hyperparameters.n_epochs"),  # OpenAI's maximum is 50
    ({"batch_size": 257}, "method.supervised.hyperparameters.batch_size"),
    ({"max_length": 10**9}, "method.supervised.hyperparameters.max_length"),
])
def test_values_the_local_trainer_cannot_honour_are_400s(gw: GatewayProcess, tmp_path: Path,
                                                         hp: dict[str, Any], param: str) -> None:
    client = gw.client()
    fid = _upload(client, write_jsonl(tmp_path / "sft.jsonl", sft_rows()))
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=BASE, training_file=fid,
                                       method={"type": "supervised", "supervised": {"hyperparameters": hp}})
    body = err.value.response.json()["error"]
    assert body["param"] == param and body["type"] == "invalid_request_error", body


def _adapter(base: Path, out: Path, **lora: Any) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(**{"r": 8, "target_modules": ["q_proj", "v_proj"], **lora})).save_pretrained(out)
    return out


def test_the_vllm_rules_refuse_what_vllm_refuses(tiny_base: Path, tmp_path: Path) -> None:
    good = _adapter(tiny_base, tmp_path / "good")
    assert check_vllm(good) == [] and vllm_compatible(good, 8)
    assert "rank r=8" in check_vllm(good, max_lora_rank=4)[0]
    assert "base_model_name_or_path" in check_vllm(good, base_model="/elsewhere")[0]
    cases = {"bias": ({"bias": "lora_only"}, "bias"),
             "save": ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
             "embed": ({"target_modules": ["q_proj", "embed_tokens"]}, "embed_tokens"),
             "dora": ({"use_dora": True}, "DoRA")}
    for name, (lora, needle) in cases.items():
        problems = check_vllm(_adapter(tiny_base, tmp_path / name, **lora))
        assert problems and any(needle in p for p in problems), (name, problems)
    assert "missing" in check_vllm(tmp_path / "nowhere")[0]
