"""Fine-tuning on a base the project has never seen: a random-initialised Qwen2 checkpoint in the
gateway's ``base_models`` catalog, trained through the real ``openai`` SDK (files + jobs) by
real worker processes; every adapter passes vLLM's loader rules; the rules themselves refuse
what vLLM refuses; values the local trainer cannot honour are 400s."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from adapters.training.vllm_rules import check_vllm, vllm_compatible
from tests.fixtures.gateway import GatewayProcess
from tests.training.data import dpo_rows, sft_rows, write_jsonl
from tests.training.spec_check import validate

BASE = "tiny-qwen2"
FAST = {"n_epochs": 1, "batch_size": 2, "max_length": 48, "max_steps": 2}


@pytest.fixture(scope="module")
def gw(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"targets": {"gpu": {"kind": "vllm", "base_urls": ["http://127.0.0.1:9/v1"]}},
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
        # nothing serves the tiny base here (the target is down): trained, not routed, and said so
        assert any("is not routed" in m for m in events), events
    assert BASE + "-ft-" not in json.dumps(client.models.list().model_dump())


@pytest.mark.parametrize(("hp", "param"), [
    ({"qlora": True}, "method.supervised.hyperparameters.qlora"),  # no bitsandbytes (nor CUDA) here
    ({"lora_r": 32}, "method.supervised.hyperparameters.lora_r"),  # above vLLM's default --max-lora-rank
    ({"lora_dropout": 0.1}, "method.supervised.hyperparameters.lora_dropout"),  # unknown: never ignored
    ({"target_modules": ["lm_head"]}, "method.supervised.hyperparameters.target_modules"),
    ({"beta": 0.1}, "method.supervised.hyperparameters.beta"),  # DPO only
    ({"n_epochs": 0}, "method.supervised.hyperparameters.n_epochs"),
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
