"""Automatic canary analysis: compare the arms' error rate, latency and ratings from the log.

    decide(arm_stats(engine, alias, since), live_model, candidate_model, settings)
      -> Decision("promote" | "rollback" | "wait", reasons, stats)

Rules, in order: wait until both arms have ``min_requests`` requests and ``min_ratings``
ratings (ratings come after the replies they rate: deciding on the requests alone would promote
before users had a say; ``min_ratings: 0`` does not wait for them); roll back when
the candidate's error rate exceeds live's by more than ``max_error_rate_delta``, when its median
latency is over ``max_latency_ratio`` times live's, or when its mean rating trails live's by more
than ``-min_rating_delta``; otherwise promote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.loop.config import CanarySettings


@dataclass
class Decision:
    action: str  # promote | rollback | wait
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def _empty() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "error_rate": 0.0, "latency_p50": None, "ratings": 0, "rating_mean": None}


def decide(stats: dict[str, dict[str, Any]], live: str, candidate: str, s: CanarySettings) -> Decision:
    lv, cd = stats.get(live, _empty()), stats.get(candidate, _empty())
    shown = {"live": {"model": live, **lv}, "candidate": {"model": candidate, **cd}}
    if lv["requests"] < s.min_requests or cd["requests"] < s.min_requests:
        return Decision("wait", [f"requests live={lv['requests']} candidate={cd['requests']} "
                                 f"(need {s.min_requests} each)"], shown)
    if lv["ratings"] < s.min_ratings or cd["ratings"] < s.min_ratings:
        return Decision("wait", [f"ratings live={lv['ratings']} candidate={cd['ratings']} "
                                 f"(need {s.min_ratings} each)"], shown)
    reasons = []
    delta = cd["error_rate"] - lv["error_rate"]
    if delta > s.max_error_rate_delta:
        reasons.append(f"error rate {cd['error_rate']:.3f} vs {lv['error_rate']:.3f} "
                       f"(+{delta:.3f} > {s.max_error_rate_delta})")
    if lv["latency_p50"] and cd["latency_p50"] and cd["latency_p50"] / lv["latency_p50"] > s.max_latency_ratio:
        reasons.append(f"p50 latency {cd['latency_p50']:.3f}s vs {lv['latency_p50']:.3f}s "
                       f"(x{cd['latency_p50'] / lv['latency_p50']:.2f} > {s.max_latency_ratio})")
    if lv["ratings"] and cd["ratings"]:
        rdelta = cd["rating_mean"] - lv["rating_mean"]
        if rdelta < s.min_rating_delta:
            reasons.append(f"rating {cd['rating_mean']:.3f} vs {lv['rating_mean']:.3f} "
                           f"({rdelta:+.3f} < {s.min_rating_delta:+})")
    if reasons:
        return Decision("rollback", reasons, shown)
    return Decision("promote", ["error rate, latency and ratings within thresholds"], shown)
