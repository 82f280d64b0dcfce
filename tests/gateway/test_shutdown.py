"""SIGTERM: in-flight streams finish, readiness goes off, and no record is lost."""

from __future__ import annotations

import signal
import threading
import time

import sqlalchemy as sa

from tests.fixtures.gateway import GatewayProcess, fake_config

WORDS = " ".join(f"w{i}" for i in range(24))  # ~8 chunks at 0.1 s: streams last ~1 s


def test_sigterm_during_20_streams_completes_them_and_keeps_every_record(fake_upstream, tmp_path):
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path)
    client = gw.client()
    results: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            stream = client.chat.completions.create(
                model="slowstream", messages=[{"role": "user", "content": WORDS}], stream=True)
            results.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.4)  # every stream has started
    gw.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert gw.stop() == 0
    assert not errors, errors
    assert results == [f"echo: {WORDS}"] * 20
    engine = sa.create_engine(f"sqlite:///{tmp_path}/tuneloop.db")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select status, completion_tokens from interactions where requested_model = 'slowstream'")).all()
    assert len(rows) == 20 and all(r.status == 200 and r.completion_tokens for r in rows)
