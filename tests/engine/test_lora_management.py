"""LoRA management as vLLM does it (``routes_lora.py``, ``resolver.py``, ``lora.py``): statuses of
load_lora_adapter, the runtime-updating switch, and the filesystem resolver, on real engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from adapters.engine.model import BASE_MODEL_NAME
from adapters.engine.resolver import FilesystemResolver, runtime_lora_updating
from tests.fixtures import engine as fx
from tests.fixtures.engine import EXTRA, spawn_engine, stop_engine

MSGS = [{"role": "user", "content": "Write one sentence about the sea."}]


def copy_adapter(src: Path, dest: Path, **config: Any) -> Path:
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "adapter_config.json").read_text())
    (dest / "adapter_config.json").write_text(json.dumps({**cfg, **config}))
    return dest


def base_path() -> str:
    from adapters.engine.model import ensure_cached

    return str(ensure_cached(fx.test_home()))


def chat(url: str, model: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    body = {"model": model, "messages": MSGS, "max_tokens": 12, "temperature": 0, **kw}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers or {}, timeout=120)


def load(url: str, name: str, path: Path | str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                      headers=headers or {}, timeout=60)


# -- the rules, on the session engine (runtime updating on) -------------------------------------------
def test_a_missing_adapter_is_404_with_vllms_message(engine_server, tmp_path):
    root = engine_server.root_url
    for path in (tmp_path / "nothing-here", tmp_path):  # no folder; a folder without adapter_config.json
        r = load(root, "ghost", path)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["message"] == f"Loading lora ghost failed: No adapter found for {path}"
        assert r.json()["error"]["param"] == "lora_path"
    assert "ghost" not in {m["id"] for m in httpx.get(root + "/v1/models").json()["data"]}


def test_adapters_breaking_a_rule_are_400(engine_server, test_adapters, tmp_path):
    root, src = engine_server.root_url, test_adapters.paths[EXTRA]
    bad = {"rank": ({"r": 32}, "LoRA rank 32 is greater than max_lora_rank 16"),
           "saved": ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
           "targets": ({"target_modules": ["q_proj", "embed_tokens"]}, "expected target modules"),
           "dora": ({"use_dora": True}, "DoRA")}
    for name, (config, message) in bad.items():
        r = load(root, name, copy_adapter(src, tmp_path / name, **config))
        assert r.status_code == 400, (name, r.text)
        assert message in r.json()["error"]["message"], (name, r.text)
    assert load(root, "valid-copy", copy_adapter(src, tmp_path / "valid-copy")).status_code == 200
    (tmp_path / "weightless").mkdir()
    shutil.copy(src / "adapter_config.json", tmp_path / "weightless")
    r = load(root, "weightless", tmp_path / "weightless")
    assert r.status_code == 400 and "doesn't contain tensors" in r.text
    httpx.post(root + "/v1/unload_lora_adapter", json={"lora_name": "valid-copy"})


# -- the switch ----------------------------------------------------------------------------------------
def test_the_switch_reads_as_vllm():
    for value in ("True", "true", "1", " TRUE "):
        assert runtime_lora_updating({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": value})
    for value in ("0", "False", "yes", "on", ""):
        assert not runtime_lora_updating({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": value})
    assert not runtime_lora_updating({})


def test_without_runtime_updating_load_and_unload_are_404(test_adapters, tmp_path):
    cache = tmp_path / "cache"
    copy_adapter(test_adapters.paths[EXTRA], cache / "cached", base_model_name_or_path=base_path())
    proc, url = spawn_engine("engine-no-runtime-lora", [], {"VLLM_LORA_RESOLVER_CACHE_DIR": str(cache)})
    try:
        for path, body in (("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(test_adapters.paths[EXTRA])}),
                           ("/v1/unload_lora_adapter", {"lora_name": "x"})):
            assert httpx.post(url + path, json=body).status_code == 404
        assert chat(url, BASE_MODEL_NAME).status_code == 200
        r = chat(url, "cached")  # the resolver needs runtime updating, as in vLLM
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    finally:
        stop_engine(proc)


# -- the filesystem resolver ---------------------------------------------------------------------------
def test_the_resolver_loads_on_first_request(resolver_engine, test_adapters):
    url, auth, cache = resolver_engine.url, resolver_engine.headers, resolver_engine.cache
    src = test_adapters.paths[EXTRA]
    copy_adapter(src, cache / "res-a", base_model_name_or_path=base_path())
    copy_adapter(src, cache / "res-b", base_model_name_or_path=BASE_MODEL_NAME)  # the served --model string
    listed = {m["id"] for m in httpx.get(url + "/v1/models", headers=auth).json()["data"]}
    assert "res-a" not in listed
    base = chat(url, BASE_MODEL_NAME, auth).json()["choices"][0]["message"]["content"]
    first = chat(url, "res-a", auth)
    assert first.status_code == 200 and first.json()["model"] == "res-a", first.text
    reply = first.json()["choices"][0]["message"]["content"]
    assert reply != base
    card = httpx.get(url + "/v1/models/res-a", headers=auth).json()
    assert card["root"] == str(cache / "res-a") and card["parent"] == BASE_MODEL_NAME
    assert load(url, "direct", cache / "res-a", auth).status_code == 200  # the same folder, loaded by name
    assert chat(url, "direct", auth).json()["choices"][0]["message"]["content"] == reply
    assert chat(url, "res-b", auth).json()["choices"][0]["message"]["content"] == reply
    assert chat(url, "res-a", auth).json()["choices"][0]["message"]["content"] == reply  # stays loaded
    tok = httpx.post(url + "/tokenize", json={"model": "res-b", "prompt": "hi"}, headers=auth)
    assert tok.status_code == 200


def test_the_resolver_refuses_what_vllms_refuses(resolver_engine, test_adapters):
    url, auth, cache = resolver_engine.url, resolver_engine.headers, resolver_engine.cache
    src = test_adapters.paths[EXTRA]
    copy_adapter(src, cache.parent / "outside", base_model_name_or_path=base_path())  # a good adapter, outside
    copy_adapter(src, cache / "other-base", base_model_name_or_path="HuggingFaceTB/SomeOtherModel")
    copy_adapter(src, cache / "not-lora", base_model_name_or_path=base_path(), peft_type="IA3")
    (cache / "no-config").mkdir()
    for name in ("other-base", "not-lora", "no-config", "absent", "../outside", str(cache.parent / "outside"),
                 ".", f"../{cache.name}"):
        r = chat(url, name, auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", (name, r.text)
    copy_adapter(src, cache / "too-big", base_model_name_or_path=base_path(), r=64)
    r = chat(url, "too-big", auth)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "LoRA adapter 'too-big' was found but could not be loaded."
    assert "too-big" not in {m["id"] for m in httpx.get(url + "/v1/models", headers=auth).json()["data"]}


def test_the_resolver_serves_completions_too(resolver_engine, test_adapters):
    url, auth = resolver_engine.url, resolver_engine.headers
    probe = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, headers=auth, timeout=60)
    if probe.status_code == 404:
        pytest.skip("this engine has no /v1/completions yet")
    copy_adapter(test_adapters.paths[EXTRA], resolver_engine.cache / "res-c", base_model_name_or_path=base_path())
    r = httpx.post(url + "/v1/completions", json={"model": "res-c", "prompt": "The sea", "max_tokens": 4},
                   headers=auth, timeout=120)
    assert r.status_code == 200, r.text


def test_resolver_configuration(tmp_path):
    def make(env: dict[str, str]) -> FilesystemResolver | None:
        return FilesystemResolver.from_env(cast(Any, None), "m", tmp_path, env)

    on = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1", "VLLM_LORA_RESOLVER_CACHE_DIR": str(tmp_path)}
    assert make({}) is None
    with pytest.raises(ValueError, match="valid directory"):
        make({**on, "VLLM_LORA_RESOLVER_CACHE_DIR": str(tmp_path / "x")})
    assert make({**on, "VLLM_PLUGINS": "other"}) is None and make({**on, "VLLM_PLUGINS": ""}) is None
    assert make({**on, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "0"}) is None
    res = make({**on, "VLLM_PLUGINS": "other,lora_filesystem_resolver"})
    assert res is not None and make(on) is not None
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert res.path_for("a/b") == (tmp_path / "a" / "b").resolve()
    for name in ("", ".", "..", "../x", "/etc", "a/../..", "nul\0byte"):
        assert res.path_for(name) is None, name
