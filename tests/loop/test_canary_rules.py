"""The canary's rules on arm statistics (adapters.loop.canary.decide), without a gateway."""

from __future__ import annotations

from adapters.loop.canary import decide
from gateway.loop_settings import CanarySettings

S = CanarySettings(percent=50, min_requests=4, min_ratings=4, max_latency_ratio=2.0)


def arm(requests: int, ratings: int, mean: float | None, errors: int = 0, p50: float = 0.1) -> dict:
    return {"requests": requests, "errors": errors, "error_rate": errors / max(requests, 1),
            "latency_p50": p50, "ratings": ratings, "rating_mean": mean}


def test_waits_for_ratings_not_only_requests():
    # the requests are in but the users' ratings of them are not yet: no verdict
    d = decide({"live": arm(12, 4, 1.0), "cand": arm(13, 1, -1.0)}, "live", "cand", S)
    assert d.action == "wait" and "ratings" in d.reasons[0]
    d = decide({"live": arm(12, 4, 1.0), "cand": arm(13, 4, -1.0)}, "live", "cand", S)
    assert d.action == "rollback" and "rating" in d.reasons[0]
    d = decide({"live": arm(12, 4, 0.5), "cand": arm(13, 4, 0.5)}, "live", "cand", S)
    assert d.action == "promote"


def test_min_ratings_zero_decides_without_them_and_errors_and_latency_still_count():
    s0 = S.model_copy(update={"min_ratings": 0})
    assert decide({"live": arm(5, 0, None), "cand": arm(5, 0, None)}, "live", "cand", s0).action == "promote"
    assert decide({"live": arm(5, 0, None), "cand": arm(5, 0, None, errors=2)}, "live", "cand", s0).action == "rollback"
    assert decide({"live": arm(5, 0, None), "cand": arm(5, 0, None, p50=0.5)}, "live", "cand", s0).action == "rollback"
    assert decide({"live": arm(3, 0, None), "cand": arm(9, 0, None)}, "live", "cand", s0).action == "wait"
