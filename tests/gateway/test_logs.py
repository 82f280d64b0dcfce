"""Structured logs: JSON lines with the request id, never a key or an Authorization header."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fixtures.gateway import FAKE_KEY, GatewayProcess, fake_config


def test_json_logs_with_request_id_and_no_secrets(fake_upstream, tmp_path):
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path,
                        env={"TUNELOOP_ACCESS_LOG": "1", "TUNELOOP_AUTH": "off"})
    secret = "sk-proj-THISMUSTNEVERBELOGGED1234567890"
    try:
        client = gw.client(api_key=secret)
        ok = client.chat.completions.create(model="ft-bot", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="err500", messages=[{"role": "user", "content": "hi"}])
        failed_id = err.value.response.headers["x-request-id"]
    finally:
        gw.stop()
    text = gw.log_path.read_text()
    assert secret not in text and FAKE_KEY not in text and "Bearer" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    by_id = {rec.get("request_id"): rec for rec in lines}
    assert by_id[ok.id]["status"] == 200 and by_id[ok.id]["level"] == "info"
    assert by_id[failed_id]["status"] == 502 and by_id[failed_id]["level"] == "warning"
    assert by_id[failed_id]["target"] == "faulty"


def test_redaction_of_secret_shaped_strings():
    from gateway.logs import redact

    assert redact("Authorization: Bearer abc.def-123") == "Authorization: Bearer [REDACTED]"
    assert "tl-" not in redact("key tl-AbCdEfGh12345678 leaked")
    assert redact("model ft:gpt-4o-mini:acme::abc123") == "model ft:gpt-4o-mini:acme::abc123"
