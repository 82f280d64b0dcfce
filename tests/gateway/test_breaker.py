"""The circuit breaker's counting rule (gateway.resilience), on the breaker itself."""

from __future__ import annotations

import time

from gateway.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def test_one_tenants_suspect_faults_never_open_it():
    b = CircuitBreaker(failures=3, cooldown_s=10)
    for _ in range(50):
        b.failure("alpha", suspect=True)
    assert b.state == CLOSED and b.allow()


def test_suspect_faults_from_two_tenants_open_it():
    b = CircuitBreaker(failures=3, cooldown_s=10)
    b.failure("alpha", suspect=True)
    b.failure("alpha", suspect=True)
    assert b.state == CLOSED
    b.failure("beta", suspect=True)  # a second tenant met it: all three count
    assert b.state == OPEN and not b.allow()


def test_replica_faults_count_whoever_met_them():
    b = CircuitBreaker(failures=3, cooldown_s=10)
    for _ in range(3):
        b.failure("alpha")
    assert b.state == OPEN


def test_a_success_starts_a_new_run():
    b = CircuitBreaker(failures=3, cooldown_s=10)
    b.failure("alpha", suspect=True)
    b.failure("beta", suspect=True)
    b.success()
    b.failure("alpha", suspect=True)
    b.failure("alpha", suspect=True)
    assert b.state == CLOSED
    b.failure()
    b.failure()
    assert b.state == CLOSED  # two replica faults, the suspects of one tenant do not add up


def test_a_probe_without_verdict_frees_its_slot():
    b = CircuitBreaker(failures=1, cooldown_s=0.05)
    b.failure()
    time.sleep(0.06)
    assert b.allow() and b.state == HALF_OPEN  # the probe slot is taken
    assert not b.allow()
    b.release()  # its client went away
    assert b.allow()
    b.failure("alpha", suspect=True)  # one tenant's 500 on the probe: no verdict either
    assert b.allow()
    b.success()
    assert b.state == CLOSED
