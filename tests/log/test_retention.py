"""Issue 19: retention per project runs on its own (the config's ``retention_days``), with an audit record."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.config import GatewayConfig
from gateway.store import db
from gateway.store.audit import AuditStore
from gateway.store.interactions import LogStore
from gateway.store.responses import ResponseStore
from tests.datasets.logfill import fill, record
from tests.fixtures.gateway import GatewayProcess, fake_config

DAY = 86400.0


def test_retention_days_per_project_run_by_the_gateway(database_url: str, fake_upstream, tmp_path: Path) -> None:
    now = time.time()
    rows = [record(i, f"q{i}", "a", project=p, created=now - age * DAY)
            for i, (p, age) in enumerate([("short", 3), ("short", 0.1), ("long", 3), ("other", 3), ("other", 0.1)])]
    fill(database_url, tmp_path, rows, [{"completion_id": "chatcmpl-0", "rating": 1.0}])
    engine = db.create_engine(database_url)
    for i in (0, 1):  # Responses API replies made of chatcmpl-0 (pruned) and chatcmpl-1 (kept)
        ResponseStore(engine).save({"id": f"resp_{i}", "created_at": now, "project": "short",
                                    "completion_id": f"chatcmpl-{i}", "previous_response_id": None,
                                    "response": {}, "input_items": []})
    config = {**fake_config(fake_upstream), "database_url": database_url,
              "retention_days": {"*": 2, "short": 1, "long": 30}}
    gw = GatewayProcess(config, tmp_path / "home", env={"TUNELOOP_RETENTION_INTERVAL_S": "0.3"})
    try:
        deadline = time.monotonic() + 30
        while sorted(LogStore(engine).ids()) != ["chatcmpl-1", "chatcmpl-2", "chatcmpl-4"]:
            assert time.monotonic() < deadline, LogStore(engine).ids()
            time.sleep(0.2)
    finally:
        gw.stop()
    (audit,) = AuditStore(engine).list(action="retention.prune")[-1:]
    assert audit["detail"]["deleted"] == {"short": 1, "long": 0, "*": 1}
    with engine.connect() as conn:  # its feedback and the Response made of it went with it
        assert conn.execute(sa.text("SELECT count(*) FROM feedback")).scalar_one() == 0
        assert list(conn.execute(sa.text("SELECT id FROM responses")).scalars()) == ["resp_1"]


@pytest.mark.parametrize(("value", "days"), [(90, {"*": 90}), ({"acme": 7}, {"acme": 7})])
def test_retention_days_in_the_config(value, days) -> None:
    assert GatewayConfig.model_validate({"retention_days": value}).retention_days == days
    with pytest.raises(ValueError, match="positive"):
        GatewayConfig.model_validate({"retention_days": {"acme": 0}})
