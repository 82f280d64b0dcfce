"""A fine-tuning job's loss curve, drawn on the server as inline SVG (no script, no library)."""

from __future__ import annotations

import math
from typing import Any

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 640, 240, 52, 14, 12, 30
SERIES = (("train_loss", "train loss", "#3857d6"), ("valid_loss", "validation loss", "#d97706"))


def _ticks(low: float, high: float, n: int = 4) -> list[float]:
    if high <= low:
        return [low]
    return [low + (high - low) * i / n for i in range(n + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def loss_curve(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The chart of the job's metrics events: one polyline per loss it reported, on shared axes.
    ``empty`` when there is nothing to draw yet."""
    series: list[dict[str, Any]] = []
    for key, label, color in SERIES:
        pts = [(float(p["step"]), float(p[key])) for p in points
               if isinstance(p.get(key), int | float) and math.isfinite(float(p[key]))]
        if pts:
            series.append({"key": key, "label": label, "color": color, "points": pts})
    if not series:
        return {"empty": True, "width": WIDTH, "height": HEIGHT, "series": [], "last": None}
    xs = [x for s in series for x, _ in s["points"]]
    ys = [y for s in series for _, y in s["points"]]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    y0 = max(0.0, y0 - (y1 - y0) * 0.05) if y0 >= 0 else y0
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def sx(x: float) -> float:
        return round(PAD_L + (x - x0) / (x1 - x0) * inner_w, 1)

    def sy(y: float) -> float:
        return round(PAD_T + (1 - (y - y0) / (y1 - y0)) * inner_h, 1)

    for s in series:
        s["polyline"] = " ".join(f"{sx(x)},{sy(y)}" for x, y in s["points"])
        s["dots"] = [{"x": sx(x), "y": sy(y)} for x, y in s["points"][-1:]]
        s["latest"] = s["points"][-1][1]
    steps = sorted({round(v) for v in _ticks(x0, x1)})
    return {"empty": False, "width": WIDTH, "height": HEIGHT, "series": series,
            "left": PAD_L, "right": WIDTH - PAD_R, "top": PAD_T, "bottom": HEIGHT - PAD_B,
            "yticks": [{"y": sy(v), "label": _label(v)} for v in _ticks(y0, y1)],
            "xticks": [{"x": sx(v), "label": str(v)} for v in steps],
            "last": int(max(xs)), "total": _total(points)}


def _total(points: list[dict[str, Any]]) -> int | None:
    totals = [p["total_steps"] for p in points if isinstance(p.get("total_steps"), int | float)]
    return int(totals[-1]) if totals else None
