"""The engine's admission pieces on their own: the KV cache's byte limit, the budget, fair queue order."""

from __future__ import annotations

import pytest
import torch

from adapters.engine.admission import FairQueue, KVBudget, parse_bytes
from adapters.engine.forward import ROUND, KVBudgetExceeded, KVCache
from adapters.engine.sampling import SamplingParams
from adapters.engine.scheduler import Request

LAYERS, BPP = 4, 4 * 2 * 1 * 2 * 4  # 4 layers, 1 kv head, head_dim 2, fp32: 64 bytes per position


def cache(limit_positions: int) -> KVCache:
    return KVCache(LAYERS, 1, 2, torch.float32, torch.device("cpu"), limit_bytes=limit_positions * BPP)


def test_growth_doubles_but_never_past_the_limit():
    c = cache(1000)
    c.ensure(3, 256, live=0)
    c.layers[0][0, 2, 0, 255, 0] = 7.0
    c.ensure(3, 257, live=256)  # doubling would give 3 x 512 = 1536 positions
    assert c.capacity == 320 and c.rows == 3 and c.nbytes <= 1000 * BPP
    assert c.layers[0][0, 2, 0, 255, 0] == 7.0  # kept across the re-layout
    assert c.peak_bytes <= 1000 * BPP + c.nbytes // LAYERS
    with pytest.raises(KVBudgetExceeded):
        c.ensure(4, 320, live=300)


def test_stale_rows_and_capacity_are_dropped_rather_than_exceeding():
    c = cache(1024)
    c.ensure(8, 128, live=0)  # 8 x 128
    c.ensure(1, 900, live=100)  # one long row now: the 7 stale rows go
    assert c.rows == 1 and c.capacity >= 900 and c.nbytes <= 1024 * BPP
    c.ensure(2, 200, live=200)  # a second row: the stale capacity beyond 200 goes too
    assert c.rows == 2 and c.capacity * 2 <= 1024 and c.capacity >= 200


def test_without_live_nothing_is_dropped():
    c = cache(1024)
    c.ensure(2, 500, live=0)
    with pytest.raises(KVBudgetExceeded):
        c.ensure(3, 10)


def test_budget():
    b = KVBudget(31 * 100 * BPP, BPP, 30, model_max_len=8192)  # usable: 30/31 of it = 3000 positions
    assert b.positions == 3000 and b.max_model_len == 3000 // ROUND * ROUND
    assert b.worst(37, 5) == 64 and b.worst(10, 10**9) == b.max_model_len
    assert b.refusal(16, 200, 10) is not None and b.refusal(4, 200, 10) is None
    assert 4 * b.worst(200, b.default_max_tokens(200, 4)) <= b.positions
    with pytest.raises(ValueError):
        KVBudget(10 * BPP, BPP, 30, 8192)


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 << 30 and parse_bytes("512MiB") == 512 << 20
    assert parse_bytes("2G") == 2 * 10**9 and parse_bytes("1048576") == 1 << 20 and parse_bytes(7) == 7


def req(name: str, tenant: str, n: int = 1, adapter: str | None = None) -> Request:
    return Request(id=name, prompt=[1], params=SamplingParams(n=n), adapter=adapter, sink=lambda ev: None,
                   tenant=tenant)


def admit_all(q: FairQueue, running: dict[str, int], limit: int, refuse=frozenset()) -> list[str]:
    order: list[str] = []

    def try_admit(r: Request) -> str:
        if len(order) >= limit:
            return "stop"
        if r.adapter in refuse:
            return "skip"
        order.append(r.id)
        return "admit"

    q.select(try_admit, running)
    return order


def test_round_robin_across_tenants():
    q = FairQueue(fair=True, max_running_per_tenant=None)
    for i in range(5):
        q.append(req(f"a{i}", "a"))
    q.append(req("b0", "b"))
    q.append(req("c0", "c"))
    assert admit_all(q, {}, 4) == ["a0", "b0", "c0", "a1"]
    assert admit_all(q, {}, 10) == ["a2", "a3", "a4"] and not q


def test_fcfs_is_one_fifo_and_a_refused_adapter_lets_later_ones_pass():
    q = FairQueue(fair=False)
    for name, tenant, adapter in [("a0", "a", None), ("a1", "a", "x"), ("a2", "a", None), ("b0", "b", None)]:
        q.append(req(name, tenant, adapter=adapter))
    assert admit_all(q, {}, 10, refuse={"x"}) == ["a0", "a2", "b0"]
    assert [r.id for r in q] == ["a1"]


def test_running_cap_only_while_another_tenant_waits():
    q = FairQueue(fair=True, max_running_per_tenant=2)
    for i in range(3):
        q.append(req(f"a{i}", "a"))
    assert admit_all(q, {"a": 5}, 10) == ["a0", "a1", "a2"]  # alone: no cap
    for i in range(3):
        q.append(req(f"a{i}", "a"))
    q.append(req("b0", "b"))
    q.append(req("b1", "b"))
    running = {"a": 2}
    assert admit_all(q, running, 10) == ["b0", "b1", "a0", "a1", "a2"]  # a waits while b is queued
    q.append(req("big", "c", n=4))
    q.append(req("c1", "c"))
    q.append(req("d0", "d"))
    assert admit_all(q, {}, 10)[0] == "big"  # nothing running: always one request, n above the cap too
