"""The gateway -> embedded engine hop (red-team findings of issue 19): the engine `tuneloop serve`
starts needs the key that start made, reads adapters only from allowed folders, serves a socket the
gateway bound (a port held elsewhere fails the start) and goes away when the gateway is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import httpx
import pytest

from gateway.config import DEFAULT_MODEL
from tests.engine.test_supervision import engine_child
from tests.fixtures.gateway import GatewayProcess

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "Hi"}]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_the_engine_hop_is_private_and_dies_with_the_gateway(tmp_path):
    gw = GatewayProcess(None, tmp_path)  # no --engine-port: a free one, bound by the gateway
    try:
        gw.wait_ready()
        runtime = tmp_path / "run" / "engines.json"
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
        entry = json.loads(runtime.read_text())["local"]
        engine, key = entry["base_url"], entry["api_key"]
        assert len(key) >= 32 and key not in " ".join(open(f"/proc/{engine_child(gw.proc.pid)}/cmdline").read())

        # /v1 needs the key (vLLM's --api-key); health and metrics stay open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            resp = httpx.get(f"{engine}/models", headers=headers)
            assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
            resp = httpx.post(f"{engine}/load_lora_adapter", headers=headers,
                              json={"lora_name": "x", "lora_path": str(tmp_path)})
            assert resp.status_code == 401
        assert httpx.get(engine.removesuffix("/v1") + "/health").status_code == 200
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{engine}/models", headers=auth).status_code == 200

        # with the key, adapters load only from the allowed folders (symlinks resolved)
        (tmp_path / "adapters" / "sneaky").symlink_to("/etc")
        for path in ("/etc", str(tmp_path / "adapters" / ".." / "run"), str(tmp_path / "adapters" / "sneaky")):
            resp = httpx.post(f"{engine}/load_lora_adapter", headers=auth, json={"lora_name": "x", "lora_path": path})
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "lora_path", resp.text

        # the gateway itself reaches it (it holds the key)
        reply = gw.client().chat.completions.create(model=DEFAULT_MODEL, messages=MSG, max_tokens=3)
        assert reply.choices[0].message.content is not None

        child = engine_child(gw.proc.pid)
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        deadline = time.monotonic() + 30
        while _alive(child):  # the engine noticed its parent is gone
            assert time.monotonic() < deadline, "the engine outlived a killed gateway"
            time.sleep(0.2)
    finally:
        gw.stop()


def test_a_held_engine_port_fails_the_start(tmp_path):
    """Another process holds the port: `serve` exits at once with the reason (no impostor engine)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        env = {**os.environ, "TUNELOOP_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port", "0", "--engine-port",
                               str(port)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in proc.stderr and "in use" in proc.stderr, proc.stderr[-2000:]
